/**
 * What can be checked before a sandbox starts is checked before, and refused with one line and
 * a hint, exit 2, in well under a second: --progress rawjson (and the rest buildah cannot do)
 * when the engine is buildah, --engine buildkit on a builder image without BuildKit, and an
 * --ssh path that is not an agent socket or a key file (a folder, a FIFO — never opened —, a
 * missing path, a file that holds no key). A full disk under an output names its folder, exit 1.
 */
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {execa} from 'execa';
import {busyboxLayout} from '../fixtures/base-images.js';
import {bin, exobuild, exobuildEnv, failure, fixturesDir, makeContext} from '../e2e/helpers.js';
import {assertNothingLeftHere} from './leftovers.js';
import {makeVictim, type Victim} from './victim.js';

/** A distro builder without BuildKit (the tests below are about what buildah refuses). */
const buildahOnly = {EXOBUILD_BUILDKIT: 'none', EXOBUILD_BINFMT: 'none'};
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-errors-'));
const context = makeContext(path.join(work, 'context'), {Dockerfile: 'FROM busybox\nRUN echo hi > /hi\n'});
let layout: string;
let victim: Victim;
/** How long `exobuild --version` takes here: Node's start-up, on a machine that may be busy. */
let startupMs = 0;
before(async () => {
	const started = Date.now();
	await execa(bin, ['--version']);
	startupMs = Date.now() - started;
	layout = await busyboxLayout(['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/arm64', 'linux/amd64'], path.join(fixturesDir, 'busybox'));
	victim = makeVictim();
	// A distro builder image (buildah only) in the cache: the engine checks read its record.
	const warm = await exobuild(['build', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`, context], {env: buildahOnly});
	assert.equal(warm.exitCode, 0, failure(warm));
});
after(() => {
	victim.assertUnchanged();
	victim.remove();
	fs.rmSync(work, {recursive: true, force: true});
});

/** Runs a build that must be refused before any sandbox: exit 2, cause + hint, fast, nothing started. */
const refusedEarly = async (args: readonly string[], pattern: RegExp): Promise<void> => {
	const started = Date.now();
	const result = await execa(bin, ['build', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, ...args, context], {
		reject: false, env: {...exobuildEnv, ...buildahOnly}, timeout: 20_000,
	});
	const ms = Date.now() - started;
	assert.equal(result.exitCode, 2, `${args.join(' ')}:\n${result.stderr}`);
	const lines = String(result.stderr).trim().split('\n');
	assert.equal(lines.length, 2, `cause + hint only, no phase started:\n${result.stderr}`);
	assert.match(lines[0]!, /^exobuild: /);
	assert.match(lines[0]!, pattern);
	assert.match(lines[1]!, /^hint: /);
	// Well under a second of work beyond starting Node: nothing was started or made.
	assert.ok(ms < startupMs + 800, `${args.join(' ')} refused after ${ms} ms (start-up alone: ${startupMs} ms)`);
	const runs = path.join(exobuildEnv.EXOBUILD_CACHE_DIR, 'runs');
	assert.deepEqual(fs.existsSync(runs) ? fs.readdirSync(runs) : [], [], 'no run folder: no sandbox was started');
};

test('--progress rawjson, --sbom, --provenance and --no-cache-filter with buildah: exit 2 before any sandbox', async () => {
	// Chosen by --engine buildah, and by auto on a builder image that has buildah only.
	for (const engine of [['--engine', 'buildah'], []]) {
		await refusedEarly([...engine, '--progress', 'rawjson'], /--progress rawjson: buildah has no machine-readable progress/);
		await refusedEarly([...engine, '--sbom', 'true'], /--sbom: buildah makes no SBOM attestations/);
		await refusedEarly([...engine, '--provenance', 'mode=max'], /--provenance: buildah makes no provenance attestations/);
		await refusedEarly([...engine, '--no-cache-filter', 'base'], /--no-cache-filter: buildah cannot skip the cache for some stages only/);
	}

	victim.assertUnchanged();
	await assertNothingLeftHere();
});

test('--engine buildkit on a builder image without BuildKit: exit 2 before any sandbox, naming the builder', async () => {
	await refusedEarly(['--engine', 'buildkit'], /--engine buildkit: the builder image exobuild-builder:distro-[\da-f]{12} has no BuildKit/);
	await assertNothingLeftHere();
});

test('--ssh takes an agent socket or a key file: a folder, a FIFO, a missing path or a file without a key is refused at once', async () => {
	const folder = path.join(work, 'ssh-folder');
	fs.mkdirSync(folder);
	const fifo = path.join(work, 'ssh-fifo');
	execFileSync('mkfifo', [fifo]);
	const notKey = path.join(work, 'not-a-key');
	fs.writeFileSync(notKey, 'just some text\n');
	await refusedEarly(['--ssh', `f=${folder}`], /--ssh f: .*ssh-folder is a folder, not a socket or a key file/);
	await refusedEarly(['--ssh', `p=${fifo}`], /--ssh p: .*ssh-fifo is a FIFO, not a socket or a key file/);
	await refusedEarly(['--ssh', `m=${path.join(work, 'absent')}`], /--ssh m: .*absent does not exist/);
	await refusedEarly(['--ssh', `n=${notKey}`], /--ssh n: .*not-a-key is not a private key file/);

	// What is accepted: a socket, and a file holding a private key (the build is not run here).
	const socket = path.join(work, 'agent.sock');
	const server = net.createServer().listen(socket);
	const key = path.join(work, 'id_test');
	fs.writeFileSync(key, '-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n', {mode: 0o600});
	try {
		for (const value of [`s=${socket}`, `k=${key}`]) {
			// The next check that fails (--progress rawjson with buildah) proves --ssh passed.
			await refusedEarly(['--engine', 'buildah', '--ssh', value, '--progress', 'rawjson'], /--progress rawjson/);
		}
	} finally {
		server.close();
	}

	victim.assertUnchanged();
	await assertNothingLeftHere();
});

test('a full filesystem under an output: one line naming the folder, exit 1, no internal error', async (t) => {
	const small = path.join(work, 'small');
	fs.mkdirSync(small);
	try {
		execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
	} catch {
		t.skip('cannot mount a tmpfs here');
		return;
	}

	try {
		const big = makeContext(path.join(work, 'big'), {Dockerfile: 'FROM busybox\nRUN head -c 4000000 /dev/urandom > /big\n'});
		const result = await exobuild(['build', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`, '-o', `type=oci,dest=${path.join(small, 'image.tar')}`, big]);
		assert.equal(result.exitCode, 1, result.all);
		assert.match(String(result.stderr), new RegExp(`^exobuild: no space left (on device )?in ${small}`, 'm'));
		assert.match(String(result.stderr), /^hint: /m);
		assert.doesNotMatch(String(result.stderr), /internal error/);
		assert.deepEqual(fs.readdirSync(small), [], 'no partial archive is left');
	} finally {
		execFileSync('umount', [small]);
	}

	victim.assertUnchanged();
	await assertNothingLeftHere();
});
