import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {Writable} from 'node:stream';
import {after, test} from 'node:test';
import {fileURLToPath} from 'node:url';
import zlib from 'node:zlib';
import * as tar from 'tar';
import {isUserError} from '../../src/errors.js';
import {blobPath, LayoutWriter, mediaTypes, type Descriptor} from '../../src/oci/index.js';
import {
	outputTargetSchema, repoTagOf, writeDockerArchive, writeLocalOutput, writeOutput, writeTarOutput, type DockerManifestEntry,
} from '../../src/outputs/index.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-outputs-'));
process.env['EXOBUILD_CACHE_DIR'] = path.join(root, 'cache');
after(() => fs.rmSync(root, {recursive: true, force: true}));

const sha256 = (data: Buffer): string => `sha256:${crypto.createHash('sha256').update(data).digest('hex')}`;

interface RawEntry {
	readonly path: string;
	readonly type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link';
	readonly content?: string;
	readonly linkpath?: string;
	readonly mode?: number;
	readonly uid?: number;
	readonly gid?: number;
}

/** A layer tar written header by header: exact types, modes, owners, hardlinks. */
const rawTar = (entries: readonly RawEntry[]): Buffer => {
	const blocks: Buffer[] = [];
	for (const entry of entries) {
		const type = entry.type ?? (entry.path.endsWith('/') ? 'Directory' : 'File');
		const body = Buffer.from(entry.content ?? '');
		const header = new tar.Header({
			path: entry.path, type, size: type === 'File' ? body.length : 0, linkpath: entry.linkpath,
			mode: entry.mode ?? (type === 'Directory' ? 0o755 : 0o644), uid: entry.uid ?? 0, gid: entry.gid ?? 0, mtime: new Date(1_700_000_000_000),
		});
		header.encode();
		blocks.push(header.block!);
		if (type === 'File') {
			blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
		}
	}

	blocks.push(Buffer.alloc(1024));
	return Buffer.concat(blocks);
};

let counter = 0;
const layerFile = (entries: readonly RawEntry[]): string => {
	const file = path.join(root, `layer-${counter++}.tar`);
	fs.writeFileSync(file, rawTar(entries));
	return file;
};

const lowerLayer = (): string => layerFile([
	{path: 'etc/'},
	{path: 'etc/keep', content: 'keep'},
	{path: 'etc/gone', content: 'old'},
	{path: 'opaque/'},
	{path: 'opaque/old', content: 'old'},
	{path: 'bin/'},
	{path: 'bin/tool', content: '#!/bin/sh\n', mode: 0o755, uid: 1234, gid: 5678},
	{path: 'bin/tool-link', type: 'Link', linkpath: 'bin/tool'},
	{path: 'data', content: 'lower data'},
	{path: 'data-link', type: 'Link', linkpath: 'data'},
	{path: 'bin/sh', type: 'SymbolicLink', linkpath: '/bin/tool'},
]);

const upperLayer = (): string => layerFile([
	{path: 'etc/.wh.gone'},
	{path: 'opaque/.wh..wh..opq'},
	{path: 'opaque/new', content: 'new'},
	{path: 'etc/keep', content: 'replaced'},
	{path: 'data', content: 'upper data'},
]);

/** One image: the lower layer, then the upper one with a whiteout, an opaque folder and replaced files. */
const singleLayout = async (name: string): Promise<string> => {
	const dir = path.join(root, name);
	const writer = new LayoutWriter(dir);
	await writer.finish(await writer.addImage({layers: [lowerLayer(), upperLayer()], architecture: 'arm64'}));
	return dir;
};

const twoPlatformLayout = async (name: string): Promise<string> => {
	const dir = path.join(root, name);
	const writer = new LayoutWriter(dir);
	const lower = lowerLayer();
	const ppc = await writer.addImage({layers: [lower, upperLayer()], architecture: 'ppc64le'});
	const arm = await writer.addImage({layers: [lower], architecture: 'arm', variant: 'v7'});
	await writer.finish(await writer.addIndex([ppc, arm]), 'latest');
	return dir;
};

const manifestOf = (layout: string, descriptor: Descriptor): {config: Descriptor; layers: Descriptor[]} => JSON.parse(fs.readFileSync(blobPath(layout, descriptor.digest), 'utf8')) as {config: Descriptor; layers: Descriptor[]};

const topOf = (layout: string): Descriptor => (JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8')) as {manifests: Descriptor[]}).manifests[0]!;

/** Replaces the last layer of a one-image layout by a blob whose digest is right but whose gzip stream is cut short: an export fails midway. */
const truncatedLayerLayout = async (name: string): Promise<string> => {
	const dir = path.join(root, name);
	const writer = new LayoutWriter(dir);
	const full = zlib.gzipSync(rawTar([{path: 'big', content: 'x'.repeat(100_000)}]));
	const cut = await writer.addBlob(full.subarray(0, full.length - 40), mediaTypes.layerGzip);
	const manifest = manifestOf(dir, await writer.addImage({layers: [lowerLayer()], architecture: 'amd64'}));
	const config = JSON.parse(fs.readFileSync(blobPath(dir, manifest.config.digest), 'utf8')) as {rootfs: {diff_ids: string[]}};
	config.rootfs.diff_ids.push(sha256(Buffer.from('whatever')));
	const configDescriptor = await writer.addBlob(JSON.stringify(config), mediaTypes.config);
	const manifestDescriptor = await writer.addBlob(JSON.stringify({...manifest, config: configDescriptor, layers: [...manifest.layers, cut]}), mediaTypes.manifest);
	await writer.finish(manifestDescriptor);
	return dir;
};

/** Every entry of a tar file (or buffer): path → type, mode, owner, link target, content. */
const listTar = async (source: string | Buffer): Promise<Map<string, {type: string; mode: number; uid: number; gid: number; linkpath?: string; content: string}>> => {
	const entries = new Map<string, {type: string; mode: number; uid: number; gid: number; linkpath?: string; content: string}>();
	const onReadEntry = (entry: tar.ReadEntry): void => {
		const chunks: Buffer[] = [];
		entry.on('data', (chunk: Buffer) => chunks.push(chunk));
		entry.on('end', () => entries.set(entry.path, {
			type: entry.type, mode: entry.mode ?? 0, uid: entry.uid ?? -1, gid: entry.gid ?? -1, ...(entry.linkpath ? {linkpath: entry.linkpath} : {}), content: Buffer.concat(chunks).toString(),
		}));
	};

	if (typeof source === 'string') {
		await tar.t({file: source, onReadEntry});
	} else {
		await new Promise<void>((resolve, reject) => {
			const parser = new tar.Parser({onReadEntry});
			parser.on('end', resolve);
			parser.on('error', reject);
			parser.end(source);
		});
	}

	return entries;
};

const leftovers = (dir: string): string[] => fs.readdirSync(dir).filter(name => /\.(partial|old|staging)$/.test(name));

test('type=docker writes manifest.json, the config byte for byte and uncompressed layers matching the diff_ids', async () => {
	const layout = await singleLayout('docker');
	const archive = path.join(root, 'docker.tar');
	await writeDockerArchive(layout, archive, {tags: ['example/app:1', 'debian', 'docker.io/library/x:y', 'registry.example:5000/a/b']});
	const entries = await listTar(archive);
	const [manifest] = JSON.parse(entries.get('manifest.json')!.content) as DockerManifestEntry[];
	assert.deepEqual(manifest!.RepoTags, ['example/app:1', 'debian:latest', 'x:y', 'registry.example:5000/a/b:latest']);

	const imageManifest = manifestOf(layout, topOf(layout));
	const configBytes = fs.readFileSync(blobPath(layout, imageManifest.config.digest));
	assert.equal(manifest!.Config, `${imageManifest.config.digest.slice(7)}.json`);
	const extracted = path.join(root, 'docker-extracted');
	fs.mkdirSync(extracted);
	await tar.x({file: archive, cwd: extracted});
	assert.ok(fs.readFileSync(path.join(extracted, manifest!.Config)).equals(configBytes), 'the config is the blob itself (docker derives the image id from it)');
	const diffIds = (JSON.parse(configBytes.toString()) as {rootfs: {diff_ids: string[]}}).rootfs.diff_ids;
	assert.equal(manifest!.Layers.length, 2);
	for (const [position, layer] of manifest!.Layers.entries()) {
		const data = fs.readFileSync(path.join(extracted, layer));
		assert.equal(sha256(data), diffIds[position]);
		assert.ok(data.equals(zlib.gunzipSync(fs.readFileSync(blobPath(layout, imageManifest.layers[position]!.digest)))));
		assert.equal(layer, `${diffIds[position]!.slice(7)}/layer.tar`);
	}

	assert.deepEqual(leftovers(root), []);
	assert.throws(() => repoTagOf('example/app@sha256:0000'), /by digest/);
});

test('type=docker refuses several platforms unless one is chosen', async () => {
	const layout = await twoPlatformLayout('docker-multi');
	const archive = path.join(root, 'docker-multi.tar');
	await assert.rejects(writeDockerArchive(layout, archive, {tags: []}), (error: unknown) => {
		assert.ok(isUserError(error));
		assert.equal(error.message, 'type=docker holds one platform; this build has 2: linux/ppc64le, linux/arm/v7');
		assert.match(error.hint ?? '', /type=oci.*--platform/);
		return true;
	});
	assert.equal(fs.existsSync(archive), false);
	assert.deepEqual(leftovers(root), []);

	await writeDockerArchive(layout, archive, {platforms: ['linux/arm/v7']});
	const [manifest] = JSON.parse((await listTar(archive)).get('manifest.json')!.content) as DockerManifestEntry[];
	assert.equal(manifest!.Layers.length, 1);
	await assert.rejects(writeDockerArchive(layout, archive, {platforms: ['linux/s390x']}), /no image for linux\/s390x/);
});

test('zstd layers are refused with a UserError', async () => {
	const dir = path.join(root, 'zstd');
	const writer = new LayoutWriter(dir);
	const written: Buffer[] = [];
	const sink = new Writable({
		write(chunk: Buffer, _encoding, callback) {
			written.push(chunk);
			callback();
		},
	});
	const zstd = await writer.addBlob(Buffer.from([0x28, 0xB5, 0x2F, 0xFD, 1, 2, 3]), 'application/vnd.oci.image.layer.v1.tar+zstd');
	await writer.finish(await writer.addImage({layers: [], precompressed: [{descriptor: zstd, diffId: sha256(Buffer.from('x'))}], architecture: 'amd64'}));
	for (const attempt of [async () => writeDockerArchive(dir, path.join(root, 'zstd.tar')), async () => writeTarOutput(dir, '-', {stdout: sink}), async () => writeLocalOutput(dir, path.join(root, 'zstd-rootfs'))]) {
		await assert.rejects(attempt(), (error: unknown) => isUserError(error) && /zstd/.test(error.message));
	}

	assert.equal(written.length, 0, 'refused before writing to stdout');
	assert.deepEqual(leftovers(root), []);
});

test('type=local writes the root filesystem with whiteouts applied into an existing folder, keeping what the image does not have', async () => {
	const layout = await singleLayout('local');
	const dest = path.join(root, 'local-out');
	fs.mkdirSync(dest);
	fs.writeFileSync(path.join(dest, 'stale'), 'from an earlier export');
	await writeLocalOutput(layout, dest);
	assert.deepEqual(fs.readdirSync(dest).sort(), ['bin', 'data', 'data-link', 'etc', 'opaque', 'stale']);
	assert.deepEqual(fs.readdirSync(path.join(dest, 'etc')), ['keep']);
	assert.equal(fs.readFileSync(path.join(dest, 'etc/keep'), 'utf8'), 'replaced');
	assert.deepEqual(fs.readdirSync(path.join(dest, 'opaque')), ['new']);
	assert.equal(fs.statSync(path.join(dest, 'bin/tool')).mode & 0o777, 0o755);
	assert.equal(fs.readlinkSync(path.join(dest, 'bin/sh')), '/bin/tool');
	assert.equal(fs.statSync(path.join(dest, 'bin/tool-link')).ino, fs.statSync(path.join(dest, 'bin/tool')).ino, 'hardlink kept');
	assert.equal(fs.readFileSync(path.join(dest, 'data-link'), 'utf8'), 'lower data', 'a hardlink keeps its own layer\'s content');
	assert.equal(fs.statSync(path.join(dest, 'bin/tool')).uid, process.getuid?.(), 'files belong to the caller');
	if (process.getuid?.() === 0) {
		const kept = path.join(root, 'local-out-owners');
		await writeLocalOutput(layout, kept, {keepOwners: true});
		assert.equal(fs.statSync(path.join(kept, 'bin/tool')).uid, 1234, 'keep-owners=true');
	}

	assert.deepEqual(leftovers(root), []);
});

test('type=local keeps symlinks as recorded: absolute targets, and targets through another symlink (usrmerge)', async () => {
	const dir = path.join(root, 'usrmerge');
	const writer = new LayoutWriter(dir);
	const base = layerFile([
		{path: 'usr/'}, {path: 'usr/lib/'}, {path: 'usr/lib/libc.so.6', content: 'libc'}, {path: 'lib', type: 'SymbolicLink', linkpath: 'usr/lib'},
	]);
	const above = layerFile([
		{path: 'usr/lib/libc.so', type: 'SymbolicLink', linkpath: '/lib/libc.so.6'},
		{path: 'usr/local/'}, {path: 'usr/local/libc', type: 'SymbolicLink', linkpath: '../../lib/libc.so.6'},
		{path: 'usr/local/far', type: 'SymbolicLink', linkpath: '../../../../../etc/passwd'},
	]);
	await writer.finish(await writer.addImage({layers: [base, above], architecture: 'amd64'}));
	const dest = path.join(root, 'usrmerge-out');
	await writeLocalOutput(dir, dest);
	assert.equal(fs.readlinkSync(path.join(dest, 'lib')), 'usr/lib');
	assert.equal(fs.readlinkSync(path.join(dest, 'usr/lib/libc.so')), '/lib/libc.so.6');
	assert.equal(fs.readlinkSync(path.join(dest, 'usr/local/libc')), '../../lib/libc.so.6');
	assert.equal(fs.readFileSync(path.join(dest, 'usr/local/libc'), 'utf8'), 'libc');
	assert.equal(fs.readlinkSync(path.join(dest, 'usr/local/far')), '../../../../../etc/passwd', 'a symlink is data: its target is not followed');
});

test('type=local with several platforms writes a folder per platform, named as buildx does', async () => {
	const layout = await twoPlatformLayout('local-multi');
	const dest = path.join(root, 'local-multi-out');
	await writeOutput(layout, {type: 'local', dest}, {tags: ['ignored']});
	assert.deepEqual(fs.readdirSync(dest).sort(), ['linux_arm_v7', 'linux_ppc64le']);
	assert.deepEqual(fs.readdirSync(path.join(dest, 'linux_ppc64le/etc')), ['keep']);
	assert.deepEqual(fs.readdirSync(path.join(dest, 'linux_arm_v7/etc')).sort(), ['gone', 'keep']);

	const one = path.join(root, 'local-one-out');
	await writeLocalOutput(layout, one, {platforms: ['linux/arm/v7']});
	assert.equal(fs.readFileSync(path.join(one, 'etc/gone'), 'utf8'), 'old', 'one chosen platform: no per-platform folder');
});

test('type=tar merges the layers in tar space: whiteouts, numeric owners, hardlinks, folders per platform', async () => {
	const layout = await singleLayout('tar');
	const file = path.join(root, 'rootfs.tar');
	await writeTarOutput(layout, file);
	const entries = await listTar(file);
	assert.deepEqual([...entries.keys()].sort(), [
		'./', 'bin/', 'bin/sh', 'bin/tool', 'bin/tool-link', 'data', 'data-link', 'etc/', 'etc/keep', 'opaque/', 'opaque/new',
	].filter(name => name !== './' || entries.has('./')));
	assert.equal(entries.get('etc/keep')!.content, 'replaced');
	assert.equal(entries.get('data')!.content, 'upper data');
	assert.deepEqual({...entries.get('bin/tool')!}, {type: 'File', mode: 0o755, uid: 1234, gid: 5678, content: '#!/bin/sh\n'});
	assert.equal(entries.get('bin/tool-link')!.type, 'Link');
	assert.equal(entries.get('bin/tool-link')!.linkpath, 'bin/tool');
	assert.equal(entries.get('bin/sh')!.linkpath, '/bin/tool');
	assert.deepEqual([entries.get('data-link')!.type, entries.get('data-link')!.content], ['File', 'lower data'], 'its target was replaced above: the link carries its own content');

	const multi = await twoPlatformLayout('tar-multi');
	const multiFile = path.join(root, 'rootfs-multi.tar');
	await writeOutput(multi, {type: 'tar', dest: multiFile});
	const multiEntries = await listTar(multiFile);
	assert.deepEqual([...new Set([...multiEntries.keys()].map(name => name.split('/')[0]))].sort(), ['linux_arm_v7', 'linux_ppc64le']);
	assert.equal(multiEntries.get('linux_arm_v7/etc/gone')!.content, 'old');
	assert.equal(multiEntries.has('linux_ppc64le/etc/gone'), false);
	assert.equal(multiEntries.get('linux_ppc64le/bin/tool-link')!.linkpath, 'linux_ppc64le/bin/tool');

	// What tar output holds is what local output unpacks.
	const unpacked = path.join(root, 'tar-unpacked');
	fs.mkdirSync(unpacked);
	await tar.x({file, cwd: unpacked});
	assert.equal(fs.readFileSync(path.join(unpacked, 'data-link'), 'utf8'), 'lower data');
	assert.deepEqual(fs.readdirSync(path.join(unpacked, 'opaque')), ['new']);
});

test('type=tar,dest=- streams the tar to stdout and nothing else', async () => {
	const layout = await singleLayout('stdout');
	const file = path.join(root, 'stdout-reference.tar');
	await writeTarOutput(layout, file);
	const outputs = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/outputs/index.js');
	const script = `const {writeOutput} = await import(${JSON.stringify(outputs)}); await writeOutput(${JSON.stringify(layout)}, {type: 'tar', dest: '-'});`;
	const child = spawn(process.execPath, ['--input-type=module', '-e', script], {stdio: ['ignore', 'pipe', 'pipe']});
	const stdout: Buffer[] = [];
	const stderr: Buffer[] = [];
	child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
	child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
	const code = await new Promise<number | null>(resolve => {
		child.on('close', resolve);
	});
	assert.equal(code, 0, Buffer.concat(stderr).toString());
	assert.ok(Buffer.concat(stdout).equals(fs.readFileSync(file)), 'stdout holds exactly the tar the file export writes');
});

test('a failing export leaves an existing destination as it was and no partial files', async () => {
	const good = await singleLayout('atomic-good');
	const cut = await truncatedLayerLayout('atomic-cut');
	const corrupt = await singleLayout('atomic-corrupt');
	fs.appendFileSync(blobPath(corrupt, manifestOf(corrupt, topOf(corrupt)).layers[1]!.digest), 'corruption');

	const outputs = path.join(root, 'atomic');
	fs.mkdirSync(outputs);
	const dockerFile = path.join(outputs, 'image.tar');
	const tarFile = path.join(outputs, 'rootfs.tar');
	const localDir = path.join(outputs, 'rootfs');
	await writeDockerArchive(good, dockerFile);
	await writeTarOutput(good, tarFile);
	const ociDir = path.join(outputs, 'layout');
	await writeLocalOutput(good, localDir);
	await writeOutput(good, {type: 'oci', dest: ociDir, tar: false});
	const listing = (dir: string): string[] => fs.readdirSync(dir, {recursive: true}).map(String).sort();
	const before = {docker: fs.readFileSync(dockerFile), tar: fs.readFileSync(tarFile), local: listing(localDir), oci: listing(ociDir)};

	for (const layout of [cut, corrupt]) {
		await assert.rejects(writeDockerArchive(layout, dockerFile), /corrupt|uncompresses|unexpected end/);
		await assert.rejects(writeTarOutput(layout, tarFile), /corrupt|unexpected end/);
		await assert.rejects(writeLocalOutput(layout, localDir), /corrupt|unexpected end/);
	}

	// type=oci copies blobs as they are (a cut gzip stream is its digest's content), so only a corrupt blob fails it.
	await assert.rejects(writeOutput(corrupt, {type: 'oci', dest: ociDir, tar: false}), /does not match/);

	assert.ok(fs.readFileSync(dockerFile).equals(before.docker));
	assert.ok(fs.readFileSync(tarFile).equals(before.tar));
	assert.deepEqual(listing(localDir), before.local);
	assert.equal(fs.readFileSync(path.join(localDir, 'etc/keep'), 'utf8'), 'replaced');
	assert.deepEqual(listing(ociDir), before.oci);
	assert.deepEqual(fs.readdirSync(outputs).sort(), ['image.tar', 'layout', 'rootfs', 'rootfs.tar']);
	assert.deepEqual(leftovers(root), []);
});

test('type=oci writes an archive, or with tar=false a layout folder naming the tags; the target schema', async () => {
	const layout = await twoPlatformLayout('oci');
	const folder = path.join(root, 'oci-folder');
	await writeOutput(layout, {type: 'oci', dest: folder, tar: false}, {tags: ['example/app:2']});
	const index = JSON.parse(fs.readFileSync(path.join(folder, 'index.json'), 'utf8')) as {manifests: Array<{digest: string; annotations: Record<string, string>}>};
	assert.equal(index.manifests[0]!.digest, topOf(layout).digest);
	assert.equal(index.manifests[0]!.annotations['io.containerd.image.name'], 'docker.io/example/app:2');
	assert.equal(fs.readdirSync(path.join(folder, 'blobs/sha256')).length, fs.readdirSync(path.join(layout, 'blobs/sha256')).length);

	const archive = path.join(root, 'oci.tar');
	await writeOutput(layout, {type: 'oci', dest: archive}, {tags: ['a:1', 'a:2']});
	assert.ok((await listTar(archive)).has('index.json'));
	// packLayoutToArchive rewrote index.json in place (one entry per tag): the other outputs still read the layout.
	await writeOutput(layout, {type: 'oci', dest: folder, tar: false}, {tags: ['example/app:3']});
	await writeOutput(layout, {type: 'tar', dest: path.join(root, 'oci-then-tar.tar')});

	assert.equal(outputTargetSchema.safeParse({type: 'local', dest: '-'}).success, false);
	assert.equal(outputTargetSchema.safeParse({type: 'oci', dest: '-', tar: false}).success, false);
	assert.equal(outputTargetSchema.safeParse({type: 'registry', dest: 'x'}).success, false);
	assert.equal(outputTargetSchema.safeParse({type: 'docker', dest: '-'}).success, true);
	await assert.rejects(writeOutput(layout, {type: 'local', dest: '-'}), (error: unknown) => isUserError(error) && /cannot be -/.test(error.message));
});
