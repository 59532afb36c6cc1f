/**
 * The distro builder image with BuildKit and tonistiigi/binfmt from release-style tarballs
 * (this setup's ../shared/upstream; skipped with the reason where there are none): what
 * `builder build --buildkit --binfmt` records and stores, the binaries really run (buildkitd
 * and binfmt print their versions, qemu-ppc64le runs a ppc64le busybox), a build uses BuildKit
 * in the sandbox, another tarball gives another builder, and with no tarball and no network
 * the builder is made with buildah only, saying so in one line.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {execa} from 'execa';
import {inspectArchive} from '../../src/oci/index.js';
import {architectures} from '../../src/platforms/table.js';
import {removeTree} from '../../src/fs/remove-tree.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {bin, exobuild, exobuildEnv, failure, fixturesDir, makeContext, upstreamTarballs} from './helpers.js';

const tarballs = upstreamTarballs();
const skip = 'skip' in tarballs ? tarballs.skip : false;
const sha256Of = (file: string): string => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

interface Described {
	archivePath: string;
	inputHash: string;
	recipeHash: string;
	reference: string;
	kind: string;
	engines: string[];
	buildkit?: {version: string; sha256: string};
	binfmt?: {version: string; sha256: string};
}

/** The builder made (or found) with the upstream tarballs, as `builder build` printed it. */
const withTools = async (): Promise<Described> => {
	if ('skip' in tarballs) {
		throw new Error('unreachable');
	}

	const made = await exobuild(['builder', 'build', '--buildkit', tarballs.buildkit, '--binfmt', tarballs.binfmt]);
	assert.equal(made.exitCode, 0, failure(made));
	return JSON.parse(String(made.stdout)) as Described;
};

test('builder build --buildkit --binfmt: the record names both tools and engines; the binaries run; QEMU is at /usr/bin/qemu-ARCH', {skip}, async () => {
	if ('skip' in tarballs) {
		return;
	}

	const image = await withTools();
	assert.equal(image.kind, 'distro');
	assert.deepEqual(image.engines, ['buildkit', 'buildah']);
	assert.deepEqual(image.buildkit, {version: 'v0.32.2', sha256: sha256Of(tarballs.buildkit)});
	assert.equal(image.binfmt?.sha256, sha256Of(tarballs.binfmt));
	const {current, ...inspected} = JSON.parse(String((await exobuild(['builder', 'inspect', image.reference])).stdout)) as Described & {current: boolean};
	assert.equal(current, true);
	assert.deepEqual(inspected, image, 'inspect prints the same record');
	const listed = await exobuild(['builder', 'ls']);
	assert.match(String(listed.stdout), new RegExp(`${image.reference}\\s.*\\sbuildkit,buildah\\s+buildkit v0\\.32\\.2, binfmt v10\\.2\\.3-68`));

	// The files as the builder carries them, run here (they are static binaries for this machine).
	const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-bk-'));
	try {
		const [builder] = (await inspectArchive(image.archivePath)).images;
		const take = async (file: string): Promise<string> => {
			const content = await builder!.readFile(file);
			assert.ok(content, `${file} is in the builder image`);
			const local = path.join(work, path.basename(file));
			fs.writeFileSync(local, content, {mode: 0o755});
			return local;
		};

		const buildkitd = await execa(await take('/usr/bin/buildkitd'), ['--version']);
		assert.match(buildkitd.stdout, /github\.com\/moby\/buildkit v0\.32\.2/);
		const buildctl = await execa(await take('/usr/bin/buildctl'), ['--version']);
		assert.match(buildctl.stdout, /github\.com\/moby\/buildkit v0\.32\.2/);
		const binfmt = await execa(await take('/usr/bin/binfmt'), ['-version'], {reject: false});
		assert.equal(binfmt.exitCode, 0, binfmt.stderr);
		assert.match(`${binfmt.stdout}${binfmt.stderr}`, /binfmt\/deploy\/v10\.2\.3-68 qemu\/10\.2\.3/);
		for (const arch of architectures) {
			assert.ok(await builder!.readFile(`/usr/bin/qemu-${arch.qemu}`), `/usr/bin/qemu-${arch.qemu}`);
		}

		const qemu = await take('/usr/bin/qemu-ppc64le');
		const busybox = await take('/usr/lib/exobuild/probes/ppc64le/busybox');
		const ran = await execa(qemu, [busybox, 'uname', '-m']);
		assert.equal(ran.stdout.trim(), 'ppc64le', 'qemu-ppc64le runs a ppc64le binary');
		assert.ok(await builder!.readFile('/usr/bin/runc') ?? await builder!.readFile('/usr/sbin/runc'), 'runc, the OCI worker\'s runtime');
	} finally {
		fs.rmSync(work, {recursive: true, force: true});
	}
});

test('a build with this builder runs BuildKit in the sandbox (rawjson progress is BuildKit\'s) for ppc64le', {skip}, async () => {
	if ('skip' in tarballs) {
		return;
	}

	await withTools();
	const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-bk-build-'));
	try {
		const layout = await busyboxLayout(['linux/ppc64le'], path.join(fixturesDir, 'busybox'));
		const context = makeContext(path.join(work, 'ctx'), {Dockerfile: 'FROM busybox\nRUN uname -m > /m\n'});
		const dest = path.join(work, 'out.tar');
		const built = await exobuild(['build', '--engine', 'buildkit', '--progress', 'rawjson', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '--output', `type=oci,dest=${dest}`, context]);
		assert.equal(built.exitCode, 0, failure(built));
		assert.match(String(built.stderr), /"vertexes"/, 'BuildKit\'s SolveStatus JSON');
		const [image] = (await inspectArchive(dest)).images;
		assert.equal((await image!.readFile('/m'))?.toString().trim(), 'ppc64le');
	} finally {
		await removeTree(work);
	}
});

test('another tarball gives another builder: --binfmt none keeps BuildKit and changes the identity', {skip}, async () => {
	if ('skip' in tarballs) {
		return;
	}

	const full = await withTools();
	const made = await exobuild(['builder', 'build', '--buildkit', tarballs.buildkit, '--binfmt', 'none']);
	assert.equal(made.exitCode, 0, failure(made));
	const lean = JSON.parse(String(made.stdout)) as Described;
	try {
		assert.notEqual(lean.inputHash, full.inputHash);
		assert.equal(lean.recipeHash, full.recipeHash, 'the same recipe');
		assert.deepEqual(lean.engines, ['buildkit', 'buildah']);
		assert.equal(lean.binfmt, undefined);
		const [builder] = (await inspectArchive(lean.archivePath)).images;
		assert.equal(await builder!.readFile('/usr/bin/binfmt'), undefined);
		assert.ok(await builder!.readFile('/usr/bin/buildkitd'));
	} finally {
		await exobuild(['builder', 'rm', lean.reference]);
	}
});

test('no BuildKit source and no network: the builder gets buildah only, said in one line', async () => {
	const netns = process.getuid?.() === 0 ? ['--net'] : ['--user', '--map-root-user', '--map-auto', '--setgroups', 'allow', '--net'];
	const env = Object.fromEntries(Object.entries({...process.env, ...exobuildEnv}).filter(([name]) => !/^EXOBUILD_(BUILDKIT|BINFMT)/.test(name)));
	// Layer 1 first, with the network (mmdebstrap needs it; a cached one is reused).
	const online = await exobuild(['builder', 'build', '--recipe', 'distro', '--buildkit', 'none', '--binfmt', 'none']);
	assert.equal(online.exitCode, 0, failure(online));
	const result = await execa('unshare', [...netns, '--', bin, 'builder', 'build', '--recipe', 'distro'], {reject: false, all: true, env, extendEnv: false});
	assert.equal(result.exitCode, 0, failure(result));
	const image = JSON.parse(String(result.stdout)) as Described;
	try {
		assert.deepEqual(image.engines, ['buildah']);
		assert.equal(image.buildkit, undefined);
		const notes = String(result.stderr).split('\n').filter(line => /buildah only/.test(line));
		assert.equal(notes.length, 1, result.stderr);
		assert.match(notes[0]!, /^exobuild: (BuildKit v0\.32\.2 could not be downloaded|.*no checksum .* is pinned|BuildKit publishes no release)/);
	} finally {
		await exobuild(['builder', 'rm', image.reference]);
	}
});
