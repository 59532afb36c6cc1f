import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import {after, test} from 'node:test';
import * as tar from 'tar';
import {isUserError} from '../../src/errors.js';
import {
	applyLayer, blobPath, inspectArchive, LayoutWriter, packLayoutToArchive, resolvePlatformManifests, unpackImageArchive, writeFileAtomically, writePlatformView,
} from '../../src/oci/index.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-oci-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));

/** A layer tar made from a map of path → content (null: a folder; '.wh.' names are whiteouts). */
const layerOf = async (name: string, files: Record<string, string | null>): Promise<string> => {
	const tree = path.join(root, `tree-${name}`);
	for (const [file, content] of Object.entries(files)) {
		const target = path.join(tree, file);
		if (content === null) {
			fs.mkdirSync(target, {recursive: true});
		} else {
			fs.mkdirSync(path.dirname(target), {recursive: true});
			fs.writeFileSync(target, content);
		}
	}

	const layer = path.join(root, `${name}.tar`);
	await tar.c({cwd: tree, file: layer, portable: true}, fs.readdirSync(tree));
	return layer;
};

const twoPlatformLayout = async (name: string): Promise<string> => {
	const dir = path.join(root, name);
	const writer = new LayoutWriter(dir);
	const lower = await layerOf(`${name}-lower`, {'etc/keep': 'keep', 'etc/gone': 'old', 'opaque/old': 'old', 'opaque/also-old': 'old'});
	const upper = await layerOf(`${name}-upper`, {'etc/.wh.gone': '', 'opaque/.wh..wh..opq': '', 'opaque/new': 'new', 'etc/keep': 'replaced'});
	const ppc = await writer.addImage({layers: [lower, upper], architecture: 'ppc64le'});
	const arm = await writer.addImage({layers: [lower], architecture: 'arm', variant: 'v7'});
	await writer.finish(await writer.addIndex([ppc, arm]), 'latest');
	return dir;
};

test('a written layout packs into an archive whose images read back through their layers and whiteouts', async () => {
	const layout = await twoPlatformLayout('roundtrip');
	const archive = path.join(root, 'roundtrip.tar');
	await packLayoutToArchive(layout, archive, {tags: ['example/app:1', 'registry.example:5000/app']});
	const inspected = await inspectArchive(archive);
	assert.equal(inspected.kind, 'index');
	assert.deepEqual(inspected.tags, ['docker.io/example/app:1', 'registry.example:5000/app:latest']);
	const ppc = inspected.images.find(image => image.platform === 'linux/ppc64le')!;
	assert.equal((await ppc.readFile('/etc/keep'))?.toString(), 'replaced');
	assert.equal(await ppc.readFile('/etc/gone'), undefined, 'whited out');
	assert.equal(await ppc.readFile('/opaque/old'), undefined, 'hidden by the opaque marker');
	assert.equal((await ppc.readFile('/opaque/new'))?.toString(), 'new');
	const arm = inspected.images.find(image => image.platform === 'linux/arm/v7')!;
	assert.equal((await arm.readFile('/etc/gone'))?.toString(), 'old');
});

test('unpacking applies layers in order with whiteouts and opaque folders', async () => {
	const dest = path.join(root, 'applied');
	fs.mkdirSync(dest);
	await applyLayer(await layerOf('a1', {'etc/keep': 'keep', 'etc/gone': 'old', 'opaque/old': 'old'}), dest);
	await applyLayer(await layerOf('a2', {'etc/.wh.gone': '', 'opaque/.wh..wh..opq': '', 'opaque/new': 'new'}), dest);
	assert.deepEqual(fs.readdirSync(path.join(dest, 'etc')).sort(), ['keep']);
	assert.deepEqual(fs.readdirSync(path.join(dest, 'opaque')), ['new']);
});

test('an empty layer (only the two zero end blocks, BuildKit\'s sha256:4f4fb700…) applies as nothing; a layer that is not a tar is refused', async () => {
	const dest = path.join(root, 'empty-layer');
	fs.mkdirSync(dest);
	const empty = path.join(root, 'empty-layer.tar.gz');
	fs.writeFileSync(empty, zlib.gzipSync(Buffer.alloc(1024)));
	assert.equal(crypto.createHash('sha256').update(Buffer.alloc(1024)).digest('hex'), '5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef');
	await applyLayer(empty, dest);
	assert.deepEqual(fs.readdirSync(dest), []);
	const garbage = path.join(root, 'garbage-layer.tar');
	fs.writeFileSync(garbage, Buffer.alloc(1024, 7));
	await assert.rejects(applyLayer(garbage, dest));
});

test('an image archive unpacks to a root filesystem; a corrupt layer is refused', async () => {
	const dir = path.join(root, 'single');
	const writer = new LayoutWriter(dir);
	const image = await writer.addImage({layers: [await layerOf('s1', {'usr/bin/tool': '#!/bin/sh\n'})], architecture: 'amd64'});
	await writer.finish(image);
	const archive = path.join(root, 'single.tar');
	await packLayoutToArchive(dir, archive, {tags: []});
	const rootfs = path.join(root, 'single-rootfs');
	await unpackImageArchive(archive, rootfs);
	assert.equal(fs.readFileSync(path.join(rootfs, 'usr/bin/tool'), 'utf8'), '#!/bin/sh\n');

	const manifest = JSON.parse(fs.readFileSync(blobPath(dir, image.digest), 'utf8')) as {layers: Array<{digest: string}>};
	fs.appendFileSync(blobPath(dir, manifest.layers[0]!.digest), 'corruption');
	await assert.rejects(packLayoutToArchive(dir, path.join(root, 'corrupt.tar'), {tags: []}), /does not match its (digest|descriptor)/);
});

test('an atomic write that fails leaves the existing file as it was and no partial file', async () => {
	const file = path.join(root, 'existing.tar');
	fs.writeFileSync(file, 'previous');
	await assert.rejects(writeFileAtomically(file, async partial => {
		fs.writeFileSync(partial, 'half');
		throw new Error('disk full');
	}), /disk full/);
	assert.equal(fs.readFileSync(file, 'utf8'), 'previous');
	assert.deepEqual(fs.readdirSync(root).filter(name => name.includes('partial')), []);
});

test('platform resolution finds each platform and names what a layout serves when one is missing', async () => {
	const layout = await twoPlatformLayout('resolve');
	const resolved = await resolvePlatformManifests(layout, ['linux/arm/v7', 'linux/ppc64le'], {name: 'base'});
	assert.equal(resolved.platforms.size, 2);
	await assert.rejects(resolvePlatformManifests(layout, ['linux/s390x'], {name: 'base'}), (error: unknown) => {
		assert.ok(isUserError(error));
		assert.match(error.message, /no image for linux\/s390x/);
		assert.match(error.hint ?? '', /linux\/ppc64le, linux\/arm\/v7/);
		return true;
	});
	await assert.rejects(resolvePlatformManifests(layout, ['linux/ppc64le'], {name: 'base', ref: 'nope'}), /no image tagged "nope"/);
	await assert.rejects(resolvePlatformManifests(layout, ['linux/ppc64le'], {name: 'base', digest: `sha256:${'0'.repeat(64)}`}), /lists no image/);

	const view = path.join(root, 'view');
	await writePlatformView(resolved.platforms.get('linux/ppc64le')!, view, '/exobuild/contexts/0/blobs', 'debian:stable');
	assert.equal(fs.readlinkSync(path.join(view, 'blobs')), '/exobuild/contexts/0/blobs');
	const index = JSON.parse(fs.readFileSync(path.join(view, 'index.json'), 'utf8')) as {manifests: Array<{digest: string; annotations: Record<string, string>}>};
	assert.deepEqual(index.manifests.map(m => m.digest), [resolved.platforms.get('linux/ppc64le')!.digest]);
	assert.equal(index.manifests[0]!.annotations['org.opencontainers.image.ref.name'], 'debian:stable');
});

test('a base\'s layers are verified by every build, an unchanged layer file from the digest exobuild remembered; a layer changed after that is refused', async () => {
	const cache = path.join(root, 'digests-cache');
	const saved = process.env['EXOBUILD_CACHE_DIR'];
	process.env['EXOBUILD_CACHE_DIR'] = cache;
	try {
		const layout = await twoPlatformLayout('remembered');
		const records = path.join(cache, 'file-digests');
		const count = (): number => (fs.existsSync(records) ? fs.readdirSync(records).filter(name => name.endsWith('.json')).length : 0);
		await resolvePlatformManifests(layout, ['linux/ppc64le'], {name: 'base'}, {rememberDigests: true});
		assert.equal(count(), 0, 'a file written within the last 2 s is not remembered (racy)');
		// Files older than the racy margin: remembered, one record per layer file.
		await new Promise(resolve => setTimeout(resolve, 2100));
		await resolvePlatformManifests(layout, ['linux/ppc64le'], {name: 'base'}, {rememberDigests: true});
		assert.equal(count(), 2);
		await resolvePlatformManifests(layout, ['linux/ppc64le'], {name: 'base'}, {rememberDigests: true});
		assert.equal(count(), 2);

		// The same size, other bytes, in place: the identity changed (ctime), so it is hashed and refused.
		const resolved = await resolvePlatformManifests(layout, ['linux/ppc64le'], {name: 'base'});
		const manifest = JSON.parse(fs.readFileSync(blobPath(layout, resolved.platforms.get('linux/ppc64le')!.digest), 'utf8')) as {layers: Array<{digest: string}>};
		const layer = blobPath(layout, manifest.layers[0]!.digest);
		const bytes = fs.readFileSync(layer);
		bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
		fs.writeFileSync(layer, bytes);
		await assert.rejects(resolvePlatformManifests(layout, ['linux/ppc64le'], {name: 'base'}, {rememberDigests: true}), (error: unknown) => {
			assert.ok(isUserError(error));
			assert.match(error.message, /does not match its digest/);
			return true;
		});
	} finally {
		if (saved === undefined) {
			delete process.env['EXOBUILD_CACHE_DIR'];
		} else {
			process.env['EXOBUILD_CACHE_DIR'] = saved;
		}
	}
});
