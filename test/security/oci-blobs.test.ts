/**
 * Hostile OCI layouts (a user's --build-context, the engine's export, a builder archive's
 * layout): every blob is opened only as a regular file inside the layout, every read is bounded,
 * nesting and fan-out are capped, and each failure is one line naming the bad blob.
 *
 * Reads that hung or grew without bound before the fix run in a child process with a timeout, so
 * a regression fails the test instead of hanging or exhausting the machine.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {execa} from 'execa';
import * as tar from 'tar';
import {verifyBuilderArchive} from '../../src/builder-image/store.js';
import {isUserError, type UserError} from '../../src/errors.js';
import {blobPath, LayoutWriter, mediaTypes, readBlobStream, resolvePlatformManifests, type Descriptor} from '../../src/oci/index.js';
import {selectImages, verifyLayers} from '../../src/outputs/images.js';
import {makeVictim, type Victim} from './victim.js';

/** Some cases make device nodes, mount a tmpfs or chown: root only (as a normal user they are skipped, saying why). */
const asRoot = process.getuid?.() === 0;

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const bin = path.join(repoRoot, 'bin', 'exobuild');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-oci-blobs-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));

interface Layout {
	readonly dir: string;
	/** index.json's entry: an image index over the two manifests. */
	readonly index: Descriptor;
	readonly ppc: Descriptor;
	readonly s390x: Descriptor;
}

interface ManifestJson {
	config: Descriptor;
	layers: Descriptor[];
}

let layouts = 0;
/** A two-platform layout (linux/ppc64le, linux/s390x) as BuildKit writes one: index.json → index → manifests. */
const goodLayout = async (): Promise<Layout> => {
	const name = `layout-${++layouts}`;
	const tree = path.join(root, `${name}-tree`);
	fs.mkdirSync(path.join(tree, 'etc'), {recursive: true});
	fs.writeFileSync(path.join(tree, 'etc', 'hostname'), 'base\n');
	const layer = path.join(root, `${name}.tar`);
	await tar.c({cwd: tree, file: layer, portable: true}, ['etc']);
	const dir = path.join(root, name);
	const writer = new LayoutWriter(dir);
	const ppc = await writer.addImage({layers: [layer], architecture: 'ppc64le'});
	const s390x = await writer.addImage({layers: [layer], architecture: 's390x'});
	const index = await writer.addIndex([ppc, s390x]);
	await writer.finish(index, 'latest');
	return {dir, index, ppc, s390x};
};

const manifestOf = (layout: Layout, descriptor: Descriptor): ManifestJson => JSON.parse(fs.readFileSync(blobPath(layout.dir, descriptor.digest), 'utf8')) as ManifestJson;

const writeIndexJson = (layout: Layout, manifests: readonly unknown[]): void => {
	fs.writeFileSync(path.join(layout.dir, 'index.json'), JSON.stringify({schemaVersion: 2, manifests}));
};

/** Adds a blob by content; returns its descriptor. */
const addBlob = (layout: Layout, content: string, mediaType: string): Descriptor => {
	const digest = `sha256:${crypto.createHash('sha256').update(content).digest('hex')}`;
	fs.writeFileSync(blobPath(layout.dir, digest), content);
	return {mediaType, digest, size: Buffer.byteLength(content)};
};

const replaceWithSymlink = (file: string, target: string): void => {
	fs.rmSync(file);
	fs.symlinkSync(target, file);
};

const replaceWithFifo = async (file: string): Promise<void> => {
	fs.rmSync(file);
	await execa('mkfifo', [file]);
};

/** The error a promise rejects with (fails the test if it resolves). */
const failureOf = async (promise: Promise<unknown>): Promise<UserError> => {
	try {
		await promise;
	} catch (error) {
		assert.ok(isUserError(error), `expected a UserError, got ${(error as Error).stack ?? String(error)}`);
		assert.doesNotMatch(error.message, /\n/, 'one line');
		assert.doesNotMatch(error.hint ?? '', /\n/, 'a one-line hint');
		return error;
	}

	assert.fail('expected the read to be refused');
};

const resolveAsUser = async (layout: Layout, platforms = ['linux/ppc64le']) => resolvePlatformManifests(layout.dir, platforms, {name: 'base'});

/** What the child process reports about one read of a layout. */
interface ChildReport {
	readonly ok: boolean;
	readonly message?: string;
	readonly hint?: string;
	readonly code?: string;
	readonly exitCode?: number;
	readonly userError?: boolean;
	readonly ms: number;
	/** Peak resident memory growth during the read, in bytes. */
	readonly rssGrowth: number;
}

const childScript = path.join(root, 'read-layout.mjs');
fs.writeFileSync(childScript, `
const [layoutModule, imagesModule, dir, how, platform] = process.argv.slice(2);
const {resolvePlatformManifests} = await import(layoutModule);
const {selectImages, verifyLayers} = await import(imagesModule);
const rss0 = process.memoryUsage().rss;
const started = performance.now();
let report;
try {
	if (how === 'user') {
		await resolvePlatformManifests(dir, [platform], {name: 'base'});
	} else {
		await verifyLayers(dir, await selectImages(dir, [platform]));
	}

	report = {ok: true};
} catch (error) {
	report = {ok: false, message: error.message, hint: error.hint, code: error.code, exitCode: error.exitCode, userError: error.name === 'UserError'};
}

report.ms = performance.now() - started;
report.rssGrowth = process.resourceUsage().maxRSS * 1024 - rss0;
process.stdout.write(JSON.stringify(report));
process.exit(0);
`);

/** Reads a layout in a child process (killed after `timeoutMs`): a hang or a memory bomb fails the test, not the runner. */
const readInChild = async (layout: Layout, how: 'user' | 'engine', platform = 'linux/ppc64le', timeoutMs = 10_000): Promise<ChildReport> => {
	const result = await execa(process.execPath, [
		childScript, new URL('../../src/oci/layout.js', import.meta.url).href, new URL('../../src/outputs/images.js', import.meta.url).href, layout.dir, how, platform,
	], {reject: false, timeout: timeoutMs, forceKillAfterDelay: 1000, env: {NODE_OPTIONS: ''}});
	assert.ok(!result.timedOut, `the read did not end within ${timeoutMs} ms`);
	assert.equal(result.exitCode, 0, `the child failed: ${result.stderr}`);
	return JSON.parse(result.stdout) as ChildReport;
};

/** Each test gets a victim folder; it must be unchanged at the end. */
const withVictim = async (run: (victim: Victim) => Promise<void>): Promise<void> => {
	const victim = makeVictim();
	try {
		await run(victim);
		victim.assertUnchanged();
	} finally {
		victim.remove();
	}
};

test('a manifest blob that is a symlink to /dev/zero is refused at once, with bounded memory', async () => withVictim(async () => {
	const layout = await goodLayout();
	replaceWithSymlink(blobPath(layout.dir, layout.ppc.digest), '/dev/zero');
	for (const how of ['user', 'engine'] as const) {
		const report = await readInChild(layout, how);
		assert.equal(report.ok, false);
		assert.ok(report.userError, report.message);
		assert.ok(report.ms < 1000, `took ${report.ms} ms`);
		assert.ok(report.rssGrowth < 64 * 1024 * 1024, `resident memory grew by ${report.rssGrowth} bytes`);
		assert.match(report.message!, new RegExp(`blob ${layout.ppc.digest.slice(0, 19)}.*manifest of linux/ppc64le.* is a symbolic link`));
		assert.equal(report.exitCode, how === 'user' ? 2 : 1);
		assert.equal(report.code, 'E_BAD_IMAGE');
	}
}));

test('a config blob that is a FIFO fails at once instead of hanging', async () => withVictim(async () => {
	const layout = await goodLayout();
	const {config} = manifestOf(layout, layout.ppc);
	await replaceWithFifo(blobPath(layout.dir, config.digest));
	for (const how of ['user', 'engine'] as const) {
		const report = await readInChild(layout, how);
		assert.equal(report.ok, false);
		assert.ok(report.ms < 1000, `took ${report.ms} ms`);
		assert.match(report.message!, /config of linux\/ppc64le\) is a FIFO, not a file/);
		assert.equal(report.exitCode, how === 'user' ? 2 : 1);
	}
}));

test('a blob that is a device node or a folder is refused without being opened', {skip: asRoot ? false : 'mknod of a character device needs root'}, async () => withVictim(async () => {
	const layout = await goodLayout();
	const {config} = manifestOf(layout, layout.ppc);
	const file = blobPath(layout.dir, config.digest);
	fs.rmSync(file);
	await execa('mknod', [file, 'c', '1', '5']); // /dev/zero's numbers
	assert.match((await failureOf(resolveAsUser(layout))).message, /config of linux\/ppc64le\) is a character device, not a file/);
	fs.rmSync(file);
	fs.mkdirSync(file);
	assert.match((await failureOf(resolveAsUser(layout))).message, /config of linux\/ppc64le\) is a folder, not a file/);
}));

test('readBlobStream, the primitive for layers, fails before its end when the bytes do not match the digest', async () => withVictim(async () => {
	const layout = await goodLayout();
	const layer = manifestOf(layout, layout.ppc).layers[0]!;
	const good: Buffer[] = [];
	for await (const chunk of await readBlobStream(layout.dir, layer, 'layer 1')) {
		good.push(chunk as Buffer);
	}

	assert.ok(Buffer.concat(good).equals(fs.readFileSync(blobPath(layout.dir, layer.digest))));
	const bytes = fs.readFileSync(blobPath(layout.dir, layer.digest));
	bytes[0] = bytes.at(0)! ^ 0xFF;
	fs.writeFileSync(blobPath(layout.dir, layer.digest), bytes);
	let ended = false;
	const stream = await readBlobStream(layout.dir, layer, 'layer 1');
	stream.on('end', () => {
		ended = true;
	});
	await assert.rejects((async () => {
		for await (const _chunk of stream) {
			// Read to the end.
		}
	})(), /layer 1\) does not match its digest/);
	assert.equal(ended, false, 'no end event for bytes that do not match');
}));

test('a blob that is a symlink to a host file is refused, even when the file matches its digest; the file is unchanged', async () => withVictim(async victim => {
	const layout = await goodLayout();
	// A layer "blob" that is the victim's file, with a descriptor that matches it byte for byte.
	const target = path.join(victim.dir, 'a');
	const content = fs.readFileSync(target);
	const stolen: Descriptor = {mediaType: mediaTypes.layer, digest: `sha256:${crypto.createHash('sha256').update(content).digest('hex')}`, size: content.length};
	fs.symlinkSync(target, blobPath(layout.dir, stolen.digest));
	const manifest = manifestOf(layout, layout.ppc);
	const changed = addBlob(layout, JSON.stringify({...manifest, layers: [...manifest.layers, stolen]}), mediaTypes.manifest);
	writeIndexJson(layout, [{...changed, platform: {os: 'linux', architecture: 'ppc64le'}}]);
	const error = await failureOf(resolveAsUser(layout));
	assert.match(error.message, /layer 2 of linux\/ppc64le\) is a symbolic link, not a file/);
	assert.equal(error.exitCode, 2);
	const engine = await failureOf((async () => verifyLayers(layout.dir, await selectImages(layout.dir, ['linux/ppc64le'])))());
	assert.match(engine.message, /is a symbolic link, not a file/);
	assert.equal(engine.exitCode, 1);
	// A manifest blob that is a symlink to a victim file is refused the same way.
	replaceWithSymlink(blobPath(layout.dir, changed.digest), target);
	assert.match((await failureOf(resolveAsUser(layout))).message, /manifest of linux\/ppc64le\) is a symbolic link/);
}));

test('index.json that is a symlink is refused', async () => withVictim(async victim => {
	const layout = await goodLayout();
	const outside = path.join(root, `outside-index-${layouts}.json`);
	fs.renameSync(path.join(layout.dir, 'index.json'), outside);
	fs.symlinkSync(outside, path.join(layout.dir, 'index.json'));
	const error = await failureOf(resolveAsUser(layout));
	assert.match(error.message, /index\.json is a symbolic link, not a file/);
	replaceWithSymlink(path.join(layout.dir, 'index.json'), path.join(victim.dir, 'a'));
	assert.match((await failureOf(resolveAsUser(layout))).message, /index\.json is a symbolic link, not a file/);
}));

test('blobs/ or blobs/sha256/ that is a symlink is refused', async () => withVictim(async () => {
	const layout = await goodLayout();
	const moved = path.join(root, `moved-blobs-${layouts}`);
	fs.renameSync(path.join(layout.dir, 'blobs', 'sha256'), moved);
	fs.symlinkSync(moved, path.join(layout.dir, 'blobs', 'sha256'));
	assert.match((await failureOf(resolveAsUser(layout))).message, /blobs\/sha256 is a symbolic link, not a folder/);
}));

test('a nested-index fan-out bomb fails fast with one line', async () => withVictim(async () => {
	const layout = await goodLayout();
	// Four levels of indexes, each listing the next one 400 times: 400^4 paths to the manifest.
	let below: Descriptor = layout.ppc;
	for (let level = 0; level < 4; level++) {
		below = addBlob(layout, JSON.stringify({schemaVersion: 2, mediaType: mediaTypes.index, manifests: Array.from({length: 400}, () => below)}), mediaTypes.index);
	}

	writeIndexJson(layout, [below]);
	for (const how of ['user', 'engine'] as const) {
		const report = await readInChild(layout, how);
		assert.equal(report.ok, false);
		assert.ok(report.ms < 1000, `took ${report.ms} ms`);
		assert.ok(report.rssGrowth < 64 * 1024 * 1024, `resident memory grew by ${report.rssGrowth} bytes`);
		assert.match(report.message!, /more than 1000 descriptors/);
		assert.doesNotMatch(report.message!, /\n/);
	}

	// Deep nesting alone (one child each) is refused too.
	let deep: Descriptor = layout.ppc;
	for (let level = 0; level < 6; level++) {
		deep = addBlob(layout, JSON.stringify({schemaVersion: 2, mediaType: mediaTypes.index, manifests: [deep]}), mediaTypes.index);
	}

	writeIndexJson(layout, [deep]);
	assert.match((await failureOf(resolveAsUser(layout))).message, /nested more than 4 deep/);
}));

test('a manifest labelled as an index is one line, not a schema dump', async () => withVictim(async () => {
	const layout = await goodLayout();
	writeIndexJson(layout, [{...layout.ppc, mediaType: mediaTypes.index}]);
	const error = await failureOf(resolveAsUser(layout));
	assert.match(error.message, new RegExp(`blob ${layout.ppc.digest.slice(0, 19)}.* is labelled application/vnd\\.oci\\.image\\.index\\.v1\\+json but is not an image index: manifests is missing`));
	assert.equal(error.code, 'E_BAD_IMAGE');
	assert.equal(error.exitCode, 2);
}));

test('a blob whose size differs from its descriptor is refused before it is read', async () => withVictim(async () => {
	const layout = await goodLayout();
	const manifest = manifestOf(layout, layout.ppc);
	const bigger = addBlob(layout, JSON.stringify({...manifest, config: {...manifest.config, size: manifest.config.size + 1}}), mediaTypes.manifest);
	writeIndexJson(layout, [{...bigger, platform: {os: 'linux', architecture: 'ppc64le'}}]);
	const error = await failureOf(resolveAsUser(layout));
	assert.match(error.message, new RegExp(`blob ${manifest.config.digest.slice(0, 19)}.*config of linux/ppc64le\\) does not match its descriptor: it is ${manifest.config.size} bytes, the descriptor says ${manifest.config.size + 1}`));
	// A layer too.
	const layer = manifest.layers[0]!;
	const wrongLayer = addBlob(layout, JSON.stringify({...manifest, layers: [{...layer, size: layer.size - 1}]}), mediaTypes.manifest);
	writeIndexJson(layout, [{...wrongLayer, platform: {os: 'linux', architecture: 'ppc64le'}}]);
	assert.match((await failureOf(resolveAsUser(layout))).message, /layer 1 of linux\/ppc64le\) does not match its descriptor: it is \d+ bytes, the descriptor says \d+/);
}));

test('a blob whose content does not match its digest is refused', async () => withVictim(async () => {
	const layout = await goodLayout();
	const {config} = manifestOf(layout, layout.ppc);
	const file = blobPath(layout.dir, config.digest);
	fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('ppc64le', 's390x\0\0'));
	assert.equal(fs.statSync(file).size, config.size, 'same size, other content');
	const error = await failureOf(resolveAsUser(layout));
	assert.match(error.message, /config of linux\/ppc64le\) does not match its digest \(its content hashes to sha256:/);
	// And a layer, through the engine's path.
	const layout2 = await goodLayout();
	const layer = manifestOf(layout2, layout2.ppc).layers[0]!;
	const layerFile = blobPath(layout2.dir, layer.digest);
	const bytes = fs.readFileSync(layerFile);
	bytes[bytes.length - 1] = bytes.at(-1)! ^ 0xFF;
	fs.writeFileSync(layerFile, bytes);
	const engine = await failureOf((async () => verifyLayers(layout2.dir, await selectImages(layout2.dir)))());
	assert.match(engine.message, /layer 1 of linux\/(ppc64le|s390x)\) does not match its digest/);
	assert.equal(engine.exitCode, 1);
	// The same layer in a --build-context is refused before any sandbox starts.
	const base = await failureOf(resolveAsUser(layout2));
	assert.match(base.message, /layer 1 of linux\/ppc64le\) does not match its digest/);
	assert.equal(base.exitCode, 2);
}));

test('a missing layer says the layout is incomplete, not that a platform is missing', async () => withVictim(async () => {
	const layout = await goodLayout();
	const layer = manifestOf(layout, layout.ppc).layers[0]!;
	fs.rmSync(blobPath(layout.dir, layer.digest));
	const error = await failureOf(resolveAsUser(layout));
	assert.match(error.message, new RegExp(`blob ${layer.digest.slice(0, 19)}.*layer 1 of linux/ppc64le\\) is missing`));
	assert.equal(error.hint, 'the layout is incomplete: copy it again with every blob');
	assert.equal(error.exitCode, 2);
}));

test('a digest with ../ in it is refused before a path is made from it', async () => withVictim(async victim => {
	const layout = await goodLayout();
	const traversal = `sha256:../../../../../../../..${path.join(victim.dir, 'a')}`;
	writeIndexJson(layout, [{mediaType: mediaTypes.manifest, digest: traversal, size: 11}]);
	const error = await failureOf(resolveAsUser(layout));
	assert.match(error.message, /index\.json is not an image index: manifests\[0\]\.digest is not a sha256 digest/);
	const engine = await failureOf(selectImages(layout.dir));
	assert.match(engine.message, /index\.json is not an image index: manifests\[0\]\.digest is not a sha256 digest/);
	// The same inside a manifest (a layer's digest).
	const manifest = manifestOf(layout, layout.ppc);
	const bad = addBlob(layout, JSON.stringify({...manifest, layers: [{...manifest.layers[0], digest: traversal}]}), mediaTypes.manifest);
	writeIndexJson(layout, [bad]);
	assert.match((await failureOf(resolveAsUser(layout))).message, /layers\[0\]\.digest is not a sha256 digest/);
}));

test('a JSON blob over the size cap is refused without reading it', async () => withVictim(async () => {
	const layout = await goodLayout();
	const huge = `{"schemaVersion":2,"manifests":[],"pad":"${'x'.repeat(5 * 1024 * 1024)}"}`;
	const index = addBlob(layout, huge, mediaTypes.index);
	writeIndexJson(layout, [index]);
	assert.match((await failureOf(resolveAsUser(layout))).message, /is 5\.0 MiB; a JSON document may be at most 4 MiB/);
}));

// Through the CLI: a bad --build-context fails during request validation, exit 2, one line + hint,
// before any sandbox, builder image or output is made.
const cliBuild = async (layout: Layout) => {
	const context = path.join(root, `context-${layouts}`);
	fs.mkdirSync(context, {recursive: true});
	fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM base\nRUN true\n');
	const cache = path.join(root, `cache-${layouts}`);
	const dest = path.join(root, `out-${layouts}.tar`);
	const started = performance.now();
	const result = await execa(bin, ['build', '--build-context', `base=oci-layout://${layout.dir}`, '--platform', 'linux/ppc64le', '-o', `type=oci,dest=${dest}`, context], {
		reject: false, timeout: 30_000, env: {EXOBUILD_CACHE_DIR: cache, CI: '1'},
	});
	const ms = performance.now() - started;
	assert.ok(!result.timedOut, 'the build did not end');
	assert.ok(!fs.existsSync(dest), 'no output');
	const made = fs.existsSync(cache) ? fs.readdirSync(cache, {recursive: true}) : [];
	assert.deepEqual(made.filter(name => /builder|runs|projects/.test(String(name))), [], 'no builder image, run or project cache was made');
	return {...result, ms, lines: result.stderr.split('\n').filter(line => line !== '')};
};

test('CLI: a base layout whose manifest is labelled as an index exits 2 with a cause and a hint', async () => withVictim(async () => {
	const layout = await goodLayout();
	writeIndexJson(layout, [{...layout.ppc, mediaType: mediaTypes.index}]);
	const result = await cliBuild(layout);
	assert.equal(result.exitCode, 2, result.stderr);
	assert.equal(result.lines.length, 2, result.stderr);
	assert.match(result.lines[0]!, /^exobuild: .*is labelled application\/vnd\.oci\.image\.index\.v1\+json but is not an image index: manifests is missing$/);
	assert.match(result.lines[1]!, /^hint: /);
}));

test('CLI: a base layout with a missing layer exits 2 with the incomplete-layout hint', async () => withVictim(async () => {
	const layout = await goodLayout();
	fs.rmSync(blobPath(layout.dir, manifestOf(layout, layout.ppc).layers[0]!.digest));
	const result = await cliBuild(layout);
	assert.equal(result.exitCode, 2, result.stderr);
	assert.deepEqual(result.lines.slice(1), ['hint: the layout is incomplete: copy it again with every blob'], result.stderr);
	assert.match(result.lines[0]!, /layer 1 of linux\/ppc64le\) is missing$/);
}));

test('CLI: a base layout whose config blob is a FIFO exits 2 at once', async () => withVictim(async () => {
	const layout = await goodLayout();
	await replaceWithFifo(blobPath(layout.dir, manifestOf(layout, layout.ppc).config.digest));
	const result = await cliBuild(layout);
	assert.equal(result.exitCode, 2, result.stderr);
	assert.equal(result.lines.length, 2, result.stderr);
	assert.match(result.lines[0]!, /config of linux\/ppc64le\) is a FIFO, not a file$/);
	assert.ok(result.ms < 10_000, `took ${result.ms} ms`);
}));

test('builder load: an archive whose manifest blob is a symlink is refused with one line', async () => withVictim(async () => {
	const layout = await goodLayout();
	writeIndexJson(layout, [layout.ppc]);
	// node-tar already refuses a link that leaves the extraction folder; one that stays inside is a symlink all the same.
	replaceWithSymlink(blobPath(layout.dir, layout.ppc.digest), '../../index.json');
	const archive = path.join(root, `builder-${layouts}.tar`);
	await tar.c({cwd: layout.dir, file: archive, portable: true}, ['oci-layout', 'index.json', 'blobs']);
	const scratch = fs.mkdtempSync(path.join(root, 'verify-'));
	const error = await failureOf(verifyBuilderArchive(archive, scratch));
	assert.match(error.message, /its OCI layout does not verify \(its layout: blob sha256:[a-f0-9]{12}… \(the manifest of linux\/ppc64le\) is a symbolic link, not a file\)/);
	assert.equal(error.exitCode, 2);
}));
