/**
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT at every phase of a real build (the RUN step, the output
 * written to a slow reader, a big local output replacing an old one, the first unpack of the
 * builder image): the run ends within 2 s with 128 + the signal's number, the old destination
 * is intact byte for byte, no partial output is left, nor a process, a mount or a run folder.
 * And env= secrets: RUN --mount=type=secret sees the value, but no file under the cache ever
 * holds it, during the build or after a SIGKILL.
 */
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {execa, type ResultPromise} from 'execa';
import * as tar from 'tar';
import {busyboxLayout} from '../fixtures/base-images.js';
import {bin, exobuild, exobuildEnv, failure, fixturesDir, hostBinfmtSnapshot, makeContext} from '../e2e/helpers.js';
import {assertNothingLeftHere, ownLeftovers} from './leftovers.js';
import {makeVictim, treeSnapshot, type Victim} from './victim.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-signals-'));
const stopSignals = [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129], ['SIGQUIT', 131]] as const;
let layout: string;
let binfmtBefore: string;
let victim: Victim;
before(async () => {
	layout = await busyboxLayout(['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/arm64', 'linux/amd64'], path.join(fixturesDir, 'busybox'));
	binfmtBefore = hostBinfmtSnapshot();
	victim = makeVictim();
	// The builder image exists before the timed tests (the first build makes it).
	const warm = await exobuild(['build', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`, makeContext(path.join(work, 'warm'), {Dockerfile: 'FROM busybox\nRUN true\n'})]);
	assert.equal(warm.exitCode, 0, failure(warm));
});
after(() => {
	victim.assertUnchanged();
	victim.remove();
	fs.rmSync(work, {recursive: true, force: true});
});

type Child = ResultPromise<{reject: false; all: true}>;

/** Runs exobuild with `args`; resolves once `ready` holds for its stderr so far (or for the run itself). */
const startUntil = async (args: readonly string[], ready: (stderr: string) => boolean | Promise<boolean>, options: {env?: Record<string, string>; stdout?: number} = {}): Promise<{child: Child; stderr: () => string}> => {
	const child = execa(bin, args, {
		reject: false, all: true, env: {...exobuildEnv, ...options.env},
		...(options.stdout === undefined ? {} : {stdout: options.stdout as unknown as 'inherit'}),
	}) as unknown as Child;
	let seen = '';
	child.stderr!.on('data', (chunk: Buffer) => {
		seen += chunk.toString();
	});
	const deadline = Date.now() + 300_000;
	for (;;) {
		if (await ready(seen)) {
			return {child, stderr: () => seen};
		}

		if (child.exitCode !== null || Date.now() > deadline) {
			child.kill('SIGKILL');
			const result = await child;
			throw new Error(`the phase was not reached (exit ${result.exitCode}):\n${seen}`);
		}

		await new Promise(resolve => setTimeout(resolve, 20));
	}
};

/** Sends `signal` and returns the exit code and how long the run took to end. */
const stopWith = async (child: Child, signal: NodeJS.Signals): Promise<{exitCode: number | undefined; ms: number; all: string}> => {
	const sent = Date.now();
	child.kill(signal);
	// A run that ignores the signal is ended after 20 s (and fails the timing assertion).
	const guard = setTimeout(() => child.kill('SIGKILL'), 20_000);
	const result = await child;
	clearTimeout(guard);
	return {exitCode: result.exitCode, ms: Date.now() - sent, all: String(result.all ?? '')};
};

/** Entries beside `dest` named like its partial or set-aside copies (.NAME.<hex>.partial / .old). */
const siblingsOf = (dest: string): string[] =>
	fs.readdirSync(path.dirname(dest)).filter(name => name.startsWith(`.${path.basename(dest)}.`));

const assertClean = async (dest: string): Promise<void> => {
	assert.deepEqual(siblingsOf(dest), [], 'no partial output is left beside the destination');
	assert.equal(hostBinfmtSnapshot(), binfmtBefore);
	victim.assertUnchanged();
	await assertNothingLeftHere();
};

const sleeper = makeContext(path.join(work, 'sleeper'), {Dockerfile: 'FROM busybox\nRUN echo step-is-running && sleep 600\n'});

for (const [signal, code] of stopSignals) {
	test(`${signal} during a RUN step: exit ${code} within 2 s, the old output intact, nothing left`, async () => {
		const dest = path.join(work, `build-${signal}.tar`);
		fs.writeFileSync(dest, `old ${signal}\n`);
		const {child} = await startUntil(['build', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '--output', `type=oci,dest=${dest}`, sleeper], seen => seen.includes('step-is-running'));
		const result = await stopWith(child, signal);
		assert.equal(result.exitCode, code, result.all);
		assert.ok(result.ms < 2000, `ended ${result.ms} ms after ${signal}`);
		assert.match(result.all, new RegExp(`interrupted by ${signal}`));
		assert.equal(fs.readFileSync(dest, 'utf8'), `old ${signal}\n`);
		await assertClean(dest);
	});
}

// 64 MiB of random data: far more than a pipe holds, so the output blocks on its reader.
const big = makeContext(path.join(work, 'big'), {Dockerfile: 'FROM busybox\nRUN head -c 67108864 /dev/urandom > /big\n'});

for (const [signal, code] of stopSignals) {
	test(`${signal} while the output streams to a reader that does not read: exit ${code} within 2 s`, async () => {
		const fifo = path.join(work, `reader-${signal}.fifo`);
		execFileSync('mkfifo', [fifo]);
		// The reader opens the FIFO and never reads: every write past the pipe's buffer waits.
		const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
		const writer = fs.openSync(fifo, fs.constants.O_WRONLY);
		try {
			const {child} = await startUntil(['build', '--progress', 'plain', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`, '-o', '-', big],
				seen => /Write the output(?!: done)/.test(seen), {stdout: writer});
			await new Promise(resolve => setTimeout(resolve, 300));
			const result = await stopWith(child, signal);
			assert.equal(result.exitCode, code, result.all);
			assert.ok(result.ms < 2000, `ended ${result.ms} ms after ${signal}`);
			await assertClean(fifo);
		} finally {
			fs.closeSync(writer);
			fs.closeSync(reader);
		}
	});
}

// Many files and a big one: the local output takes seconds to write.
const many = makeContext(path.join(work, 'many'), {
	Dockerfile: 'FROM busybox\nRUN mkdir /many && cd /many && i=0 && while [ $i -lt 20000 ]; do echo $i > f$i; i=$((i+1)); done && head -c 400000000 /dev/urandom > /big\n',
});

for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
	test(`${signal} while a big local output is written: exit ${code} within 2 s, the old folder intact, no partial`, async () => {
		const dest = path.join(work, `local-${signal}`);
		makeContext(dest, {'keep.txt': 'the last good tree\n', 'sub/also.txt': 'also\n'});
		const before = treeSnapshot(dest);
		const {child} = await startUntil(['build', '--progress', 'plain', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`, '-o', `type=local,dest=${dest}`, many],
			seen => /Write the output(?!: done)/.test(seen));
		await new Promise(resolve => setTimeout(resolve, 200));
		const result = await stopWith(child, signal);
		assert.equal(result.exitCode, code, `the output was still being written when ${signal} came:\n${result.all}`);
		assert.ok(result.ms < 2000, `ended ${result.ms} ms after ${signal}`);
		assert.deepEqual(treeSnapshot(dest), before, 'the old folder is intact');
		await assertClean(dest);
	});
}

test('SIGINT, SIGTERM, SIGHUP and SIGQUIT during the first unpack of the builder image: exit within 2 s, no unpack folder left', async () => {
	// A fresh cache holding only the builder archive: the first build unpacks it.
	// The current builder: the newest archive (the warm-up build above used or made it).
	const store = path.join(exobuildEnv.EXOBUILD_CACHE_DIR, 'builder-images');
	const [archive] = fs.readdirSync(store).filter(name => name.endsWith('.tar')).sort((a, b) => fs.statSync(path.join(store, b)).mtimeMs - fs.statSync(path.join(store, a)).mtimeMs);
	assert.ok(archive !== undefined, 'the builder image exists');
	const fresh = path.join(work, 'fresh-cache');
	const env = {EXOBUILD_CACHE_DIR: fresh};
	const loaded = await execa(bin, ['builder', 'load', '-i', path.join(store, archive)], {reject: false, all: true, env: {...exobuildEnv, ...env}});
	assert.equal(loaded.exitCode, 0, failure(loaded));
	const rootfsDir = path.join(fresh, 'linux-userns', 'rootfs');
	const unpacking = (): boolean => fs.existsSync(rootfsDir) && fs.readdirSync(rootfsDir).some(name => name.startsWith('.unpack-'));
	for (const [signal, code] of stopSignals) {
		const {child} = await startUntil(['build', '--progress', 'plain', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`, sleeper], () => unpacking(), {env});
		const result = await stopWith(child, signal);
		assert.equal(result.exitCode, code, result.all);
		assert.ok(result.ms < 2000, `ended ${result.ms} ms after ${signal}`);
		assert.deepEqual(fs.existsSync(rootfsDir) ? fs.readdirSync(rootfsDir) : [], [], 'no unpack folder and no half rootfs is left');
		assert.deepEqual(fs.existsSync(path.join(fresh, 'runs')) ? fs.readdirSync(path.join(fresh, 'runs')) : [], [], 'no run folder is left');
		const left = await ownLeftovers(fresh);
		assert.deepEqual(left.processes, []);
		assert.deepEqual(left.mounts, []);
	}

	victim.assertUnchanged();
});

/** Files under the cache (no symlink followed, no FIFO or device opened) whose bytes contain `needle`. */
const grepCache = async (needle: string): Promise<string[]> => {
	const found = await execa('grep', ['-r', '-l', '-F', '-D', 'skip', '-a', '--', needle, exobuildEnv.EXOBUILD_CACHE_DIR], {reject: false});
	return String(found.stdout).split('\n').filter(Boolean);
};

const secretStep = makeContext(path.join(work, 'secret'), {
	Dockerfile: 'FROM busybox\nRUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d" " -f1 > /proof && echo secret-step-running && sleep 6\n',
});

test('an env= secret reaches RUN --mount=type=secret, and no file under the cache holds it, during the build or after', async () => {
	const value = `exo-secret-${crypto.randomBytes(12).toString('hex')}`;
	const dest = path.join(work, 'secret.tar');
	const {child} = await startUntil(['build', '--progress', 'plain', '--no-cache', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`,
		'--secret', 'id=tok,env=EXO_TOKEN', '-o', `type=oci,dest=${dest}`, secretStep], seen => seen.includes('secret-step-running'), {env: {EXO_TOKEN: value}});
	assert.deepEqual(await grepCache(value), [], 'while the step that mounts it runs');
	const result = await child;
	assert.equal(result.exitCode, 0, failure(result));
	assert.deepEqual(await grepCache(value), [], 'after the build');
	assert.equal(fs.readFileSync(dest).includes(value), false, 'not in the image');
	const proof: Buffer[] = [];
	const layers = path.join(work, 'secret-layout');
	fs.mkdirSync(layers);
	await tar.x({file: dest, cwd: layers});
	for (const blob of fs.readdirSync(path.join(layers, 'blobs', 'sha256'))) {
		await tar.t({file: path.join(layers, 'blobs', 'sha256', blob), filter: name => name.replace(/^\.?\//, '') === 'proof', onReadEntry: entry => entry.on('data', (chunk: Buffer) => proof.push(chunk))}).catch(() => undefined);
	}

	assert.equal(Buffer.concat(proof).toString().trim(), crypto.createHash('sha256').update(value).digest('hex'), 'the RUN step saw the value');
	victim.assertUnchanged();
	await assertNothingLeftHere();
});

test('after a SIGKILL in the middle of the step that mounts an env= secret, no file under the cache holds it', async () => {
	const value = `exo-secret-${crypto.randomBytes(12).toString('hex')}`;
	const {child} = await startUntil(['build', '--progress', 'plain', '--no-cache', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`,
		'--secret', 'id=tok,env=EXO_TOKEN', secretStep], seen => seen.includes('secret-step-running'), {env: {EXO_TOKEN: value}});
	child.kill('SIGKILL');
	await child;
	for (let attempt = 0; attempt < 100 && (await ownLeftovers()).processes.length > 0; attempt++) {
		await new Promise(resolve => setTimeout(resolve, 100));
	}

	assert.deepEqual(await grepCache(value), [], 'what the killed run left holds no secret');
	// The next run reaps what the killed one left.
	const next = await exobuild(['build', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`, makeContext(path.join(work, 'after-kill'), {Dockerfile: 'FROM busybox\nRUN true\n'})]);
	assert.equal(next.exitCode, 0, failure(next));
	victim.assertUnchanged();
	await assertNothingLeftHere();
});
