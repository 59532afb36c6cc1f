/**
 * mergeLayouts (src/oci/merge.ts): per-node solve results (real OCI layouts written by
 * src/oci/writer.ts, shaped as BuildKit exports them: index.json → image index → manifests and
 * attestations, or index.json → one manifest) become one layout whose image index lists each
 * platform once, in --platform order; the result goes through the outputs as a local build does.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import * as tar from 'tar';
import {isUserError, type UserError} from '../../src/errors.js';
import {
	blobPath, buildkitAnnotationAttribute, inspectArchive, LayoutWriter, mediaTypes, mergeLayouts, parseAnnotation, producedLayout, readIndexJson, verifyLayout,
	type Descriptor, type ImageIndex, type MergeOptions,
} from '../../src/oci/index.js';
import {writeOutput} from '../../src/outputs/index.js';
import {readExportedImage} from '../../src/pipeline/deliver-outputs.js';
import {refusalOf} from '../fixtures/refusal.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-oci-merge-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));

let made = 0;
const fresh = (name: string): string => path.join(root, `${name}-${++made}`);

/** A layer tar of path → content. */
const layerOf = async (files: Record<string, string>): Promise<string> => {
	const tree = fresh('tree');
	for (const [file, content] of Object.entries(files)) {
		fs.mkdirSync(path.dirname(path.join(tree, file)), {recursive: true});
		fs.writeFileSync(path.join(tree, file), content);
	}

	const layer = `${tree}.tar`;
	await tar.c({cwd: tree, file: layer, portable: true, mtime: new Date(0)}, fs.readdirSync(tree));
	return layer;
};

/** The base layer every platform shares (the same bytes in every part: one blob in the result). */
let sharedLayer: string | undefined;
const baseLayer = async (): Promise<string> => {
	sharedLayer ??= await layerOf({'etc/os-release': 'ID=exobuild-test\n'});
	return sharedLayer;
};

interface Part {
	readonly dir: string;
	/** Manifest descriptors by platform id. */
	readonly images: ReadonlyMap<string, Descriptor>;
	/** The attestation manifests, by the digest of the image each describes. */
	readonly attestations: ReadonlyMap<string, Descriptor>;
}

const [arch, variantOf] = [(id: string) => id.split('/')[1]!, (id: string) => id.split('/')[2]];

/**
 * One solve's result for `platforms`: as BuildKit writes several platforms (index.json → index
 * → manifests, each followed by a provenance attestation), or with `single` one manifest
 * named in index.json. `noPlatform` leaves the descriptors' platform out (the config still says it).
 */
const partLayout = async (platforms: readonly string[], options: {single?: boolean; noPlatform?: boolean; attest?: boolean} = {}): Promise<Part> => {
	const dir = fresh('part');
	const writer = new LayoutWriter(dir);
	const images = new Map<string, Descriptor>();
	const attestations = new Map<string, Descriptor>();
	const listed: Descriptor[] = [];
	for (const id of platforms) {
		const own = await layerOf({'etc/arch': `${id}\n`});
		const variant = variantOf(id);
		const image = await writer.addImage({layers: [await baseLayer(), own], architecture: arch(id), ...(variant === undefined ? {} : {variant}), cmd: ['/bin/sh']});
		const {platform: _platform, ...bare} = image;
		images.set(id, image);
		listed.push(options.noPlatform === true ? bare : image);
		if (options.attest === true) {
			const statement = await writer.addBlob(JSON.stringify({_type: 'https://in-toto.io/Statement/v0.1', predicateType: 'https://slsa.dev/provenance/v0.2', subject: [{digest: {sha256: image.digest.slice(7)}}]}), 'application/vnd.in-toto+json');
			const config = await writer.addBlob('{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}', mediaTypes.config);
			const manifest = await writer.addBlob(JSON.stringify({schemaVersion: 2, mediaType: mediaTypes.manifest, config, layers: [{...statement, annotations: {'in-toto.io/predicate-type': 'https://slsa.dev/provenance/v0.2'}}]}), mediaTypes.manifest);
			const attestation = {...manifest, platform: {os: 'unknown', architecture: 'unknown'}, annotations: {'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': image.digest}};
			attestations.set(image.digest, attestation);
			listed.push(attestation);
		}
	}

	if (options.single === true) {
		assert.equal(listed.length, 1);
		await writer.finish(listed[0]!, 'latest');
	} else {
		await writer.finish(await writer.addIndex(listed), 'latest');
	}

	return {dir, images, attestations};
};

const readJson = <T>(file: string): T => JSON.parse(fs.readFileSync(file, 'utf8')) as T;

/** A one-image part whose descriptor names no platform and whose config has an empty os and architecture. */
const platformlessPart = async (): Promise<{dir: string; manifest: Descriptor}> => {
	const part = await partLayout(['linux/s390x'], {single: true, noPlatform: true});
	const manifest = readJson<{config: Descriptor; layers: Descriptor[]}>(blobPath(part.dir, part.images.get('linux/s390x')!.digest));
	const config = {...readJson<Record<string, unknown>>(blobPath(part.dir, manifest.config.digest)), architecture: '', os: ''};
	const writer = new LayoutWriter(part.dir);
	const newManifest = await writer.addBlob(JSON.stringify({...manifest, config: await writer.addBlob(JSON.stringify(config), mediaTypes.config)}), mediaTypes.manifest);
	await writer.finish(newManifest);
	return {dir: part.dir, manifest: newManifest};
};

/** The merged layout's image index (index.json's one entry). */
const mergedIndex = (dir: string): {entry: Descriptor; index: ImageIndex} => {
	const outer = readJson<ImageIndex>(path.join(dir, 'index.json'));
	assert.equal(outer.manifests.length, 1, 'index.json names one image index');
	const entry = outer.manifests[0]!;
	assert.equal(entry.mediaType, mediaTypes.index);
	return {entry, index: readJson<ImageIndex>(blobPath(dir, entry.digest))};
};

const sha256File = (file: string): string => `sha256:${crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')}`;

const failureOf = async (promise: Promise<unknown>): Promise<UserError> => refusalOf(promise, 'expected the merge to be refused');

const merge = async (parts: ReadonlyArray<Part | string>, platforms: readonly string[], options: Partial<MergeOptions> = {}): Promise<{dest: string; merged: Awaited<ReturnType<typeof mergeLayouts>>}> => {
	const dest = path.join(fresh('merged'), 'oci-layout');
	fs.mkdirSync(path.dirname(dest));
	const refs = parts.map((part, position) => producedLayout(typeof part === 'string' ? part : part.dir, `node-${position}`));
	return {dest, merged: await mergeLayouts(refs, dest, {platforms, ...options})};
};

test('three parts (a nested index with attestations, a single manifest, descriptors without platforms) merge into one index in --platform order', async () => {
	const ppcArm = await partLayout(['linux/ppc64le', 'linux/arm64'], {attest: true});
	const s390x = await partLayout(['linux/s390x'], {single: true});
	const armv7 = await partLayout(['linux/arm/v7'], {noPlatform: true});
	const order = ['linux/s390x', 'linux/arm/v7', 'linux/arm64', 'linux/ppc64le'];
	const {dest, merged} = await merge([ppcArm, s390x, armv7], order, {
		annotations: [['index:org.opencontainers.image.description', 'merged'], ['manifest-descriptor[linux/s390x]:com.example.node', 'z15'], ['index-descriptor:com.example.top', 'yes'], ['com.example.in-manifest', 'left to the solves']],
	});
	const {entry, index} = mergedIndex(dest);
	assert.deepEqual(entry.annotations, {'com.example.top': 'yes'});
	assert.deepEqual(index.annotations, {'org.opencontainers.image.description': 'merged'});
	const expected = [s390x.images.get('linux/s390x')!, armv7.images.get('linux/arm/v7')!, ppcArm.images.get('linux/arm64')!, ppcArm.images.get('linux/ppc64le')!];
	const images = index.manifests.filter(descriptor => descriptor.annotations?.['vnd.docker.reference.type'] === undefined);
	assert.deepEqual(images.map(descriptor => descriptor.digest), expected.map(descriptor => descriptor.digest));
	assert.deepEqual(images.map(descriptor => descriptor.platform), [
		{os: 'linux', architecture: 's390x'}, {os: 'linux', architecture: 'arm', variant: 'v7'}, {os: 'linux', architecture: 'arm64'}, {os: 'linux', architecture: 'ppc64le'},
	], 'the platform of the arm/v7 image is taken from its config');
	assert.deepEqual(images[0]!.annotations, {'com.example.node': 'z15'}, 'the part\'s image name is dropped, the user\'s manifest-descriptor annotation is added');
	assert.equal(images[1]!.annotations, undefined);
	// The attestations follow the images, in the same order, each naming its image.
	const attestations = index.manifests.slice(images.length);
	assert.deepEqual(attestations.map(descriptor => descriptor.annotations?.['vnd.docker.reference.digest']), [ppcArm.images.get('linux/arm64')!.digest, ppcArm.images.get('linux/ppc64le')!.digest]);
	assert.deepEqual(attestations.map(descriptor => descriptor.digest), [ppcArm.attestations.get(ppcArm.images.get('linux/arm64')!.digest)!.digest, ppcArm.attestations.get(ppcArm.images.get('linux/ppc64le')!.digest)!.digest]);
	assert.deepEqual(merged.images.map(image => [image.platform, image.part]), [['linux/s390x', 1], ['linux/arm/v7', 2], ['linux/arm64', 0], ['linux/ppc64le', 0]]);

	// Every blob once, exactly the reachable ones, each hashing to its name; the shared base layer is one file.
	const files = fs.readdirSync(path.join(dest, 'blobs', 'sha256')).map(name => `sha256:${name}`).sort();
	assert.deepEqual(files, [...await verifyLayout(dest)].sort());
	assert.deepEqual(files, [...merged.blobs]);
	for (const digest of files) {
		assert.equal(sha256File(blobPath(dest, digest)), digest);
	}

	const layersOfImages = images.flatMap(descriptor => readJson<{layers: Descriptor[]}>(blobPath(dest, descriptor.digest)).layers.map(layer => layer.digest));
	assert.equal(layersOfImages.length, 8);
	assert.equal(new Set(layersOfImages).size, 5, 'four own layers and one shared base layer');
	assert.ok(merged.linked > 0, 'parts on the same filesystem are hard-linked');
});

test('a merged layout is delivered as a local build: readExportedImage, then an OCI archive that reads back per platform, and a local output per platform', async () => {
	const ppc = await partLayout(['linux/ppc64le'], {attest: true});
	const s390x = await partLayout(['linux/s390x'], {single: true});
	const {dest, merged} = await merge([s390x, ppc], ['linux/ppc64le', 'linux/s390x']);
	const exported = await readExportedImage(path.dirname(dest));
	assert.equal(exported.top.digest, merged.top.digest);
	assert.equal(exported.configDigest, undefined, 'an index has no one config');

	const archive = path.join(path.dirname(dest), 'image.tar');
	await writeOutput(exported.layout, {type: 'oci', dest: archive}, {tags: ['example/app:1'], platforms: ['linux/ppc64le', 'linux/s390x']});
	const inspected = await inspectArchive(archive);
	assert.equal(inspected.kind, 'index');
	assert.equal(inspected.topDigest, merged.top.digest);
	assert.deepEqual(inspected.tags, ['docker.io/example/app:1']);
	assert.deepEqual(inspected.images.map(image => image.platform), ['linux/ppc64le', 'linux/s390x']);
	for (const image of inspected.images) {
		assert.equal((await image.readFile('/etc/arch'))?.toString(), `${image.platform}\n`);
		assert.equal((await image.readFile('/etc/os-release'))?.toString(), 'ID=exobuild-test\n');
	}

	assert.deepEqual(inspected.images.map(image => image.manifestDigest), [ppc.images.get('linux/ppc64le')!.digest, s390x.images.get('linux/s390x')!.digest]);

	const local = path.join(path.dirname(dest), 'rootfs');
	await writeOutput(exported.layout, {type: 'local', dest: local}, {platforms: ['linux/ppc64le', 'linux/s390x']});
	assert.equal(fs.readFileSync(path.join(local, 'linux_ppc64le', 'etc', 'arch'), 'utf8'), 'linux/ppc64le\n');
	assert.equal(fs.readFileSync(path.join(local, 'linux_s390x', 'etc', 'arch'), 'utf8'), 'linux/s390x\n');

	// type=tar: a top-level folder per platform.
	const rootfsTar = path.join(path.dirname(dest), 'rootfs.tar');
	await writeOutput(exported.layout, {type: 'tar', dest: rootfsTar}, {platforms: ['linux/ppc64le', 'linux/s390x']});
	const tarFiles = new Map<string, string>();
	await tar.t({file: rootfsTar, onReadEntry: entry => entry.on('data', (chunk: Buffer) => tarFiles.set(entry.path, (tarFiles.get(entry.path) ?? '') + chunk.toString()))});
	assert.equal(tarFiles.get('linux_ppc64le/etc/arch'), 'linux/ppc64le\n');
	assert.equal(tarFiles.get('linux_s390x/etc/arch'), 'linux/s390x\n');

	// type=docker: one platform of the merged index, as `docker load` reads it.
	const dockerTar = path.join(path.dirname(dest), 'docker.tar');
	await writeOutput(exported.layout, {type: 'docker', dest: dockerTar}, {tags: ['example/app:1'], platforms: ['linux/s390x']});
	const dockerFiles = new Map<string, Buffer>();
	await tar.t({file: dockerTar, onReadEntry(entry) {
		const chunks: Buffer[] = [];
		entry.on('data', (chunk: Buffer) => chunks.push(chunk));
		entry.on('end', () => dockerFiles.set(entry.path, Buffer.concat(chunks)));
	}});
	const [entry] = JSON.parse(dockerFiles.get('manifest.json')!.toString()) as Array<{Config: string; RepoTags: string[]}>;
	assert.deepEqual(entry!.RepoTags, ['example/app:1']);
	assert.equal((JSON.parse(dockerFiles.get(entry!.Config)!.toString()) as {architecture: string}).architecture, 's390x');
});

test('with link: false every blob is a copy (its own inode), and the parts are left as they were', async () => {
	const ppc = await partLayout(['linux/ppc64le']);
	const s390x = await partLayout(['linux/s390x']);
	const before = fs.readdirSync(path.join(ppc.dir, 'blobs', 'sha256')).map(name => fs.statSync(path.join(ppc.dir, 'blobs', 'sha256', name)).nlink);
	const {dest, merged} = await merge([ppc, s390x], ['linux/ppc64le', 'linux/s390x'], {link: false});
	assert.equal(merged.linked, 0);
	for (const digest of merged.blobs) {
		assert.equal(fs.statSync(blobPath(dest, digest)).nlink, 1);
	}

	assert.deepEqual(fs.readdirSync(path.join(ppc.dir, 'blobs', 'sha256')).map(name => fs.statSync(path.join(ppc.dir, 'blobs', 'sha256', name)).nlink), before);
});

test('a part whose index.json names its image once per tag (as a tagged export does) gives each platform and attestation once', async () => {
	const ppc = await partLayout(['linux/ppc64le'], {attest: true});
	const s390x = await partLayout(['linux/s390x']);
	const outer = await readIndexJson(ppc.dir);
	const [top] = outer.manifests;
	fs.writeFileSync(path.join(ppc.dir, 'index.json'), JSON.stringify({...outer, manifests: ['a:1', 'a:2'].map(tag => ({...top, annotations: {'org.opencontainers.image.ref.name': tag}}))}));
	const {dest} = await merge([ppc, s390x], ['linux/ppc64le', 'linux/s390x']);
	const {index} = mergedIndex(dest);
	assert.deepEqual(index.manifests.map(descriptor => descriptor.platform?.architecture), ['ppc64le', 's390x', 'unknown']);
});

test('one part with one image for one platform is a one-entry index', async () => {
	const s390x = await partLayout(['linux/s390x'], {single: true});
	const {dest} = await merge([s390x], ['linux/s390x']);
	const {index} = mergedIndex(dest);
	assert.deepEqual(index.manifests.map(descriptor => [descriptor.digest, descriptor.platform?.architecture]), [[s390x.images.get('linux/s390x')!.digest, 's390x']]);
});

/** The merge is refused with `pattern` and `code`, and leaves no dest behind. */
const assertRefused = async (parts: ReadonlyArray<Part | string>, platforms: readonly string[], pattern: RegExp, code: string, options: Partial<MergeOptions> = {}): Promise<UserError> => {
	const parent = fresh('refused');
	fs.mkdirSync(parent);
	const dest = path.join(parent, 'oci-layout');
	const refs = parts.map((part, position) => producedLayout(typeof part === 'string' ? part : part.dir, `node-${position}`));
	const error = await failureOf(mergeLayouts(refs, dest, {platforms, ...options}));
	assert.match(error.message, pattern);
	assert.equal(error.code, code);
	assert.equal(error.exitCode, 1, 'a result that cannot be merged fails the build');
	assert.deepEqual(fs.readdirSync(parent), [], 'nothing is left of dest');
	return error;
};

test('two parts that both hold a platform are refused, naming both', async () => {
	const first = await partLayout(['linux/ppc64le', 'linux/s390x']);
	const second = await partLayout(['linux/s390x']);
	const error = await assertRefused([first, second], ['linux/ppc64le', 'linux/s390x'], /node-0 and node-1 both hold an image for linux\/s390x/, 'E_MERGE');
	assert.match(error.hint ?? '', /one node/);
});

test('a platform no part holds, and one that was not asked for, are refused', async () => {
	const ppc = await partLayout(['linux/ppc64le']);
	const s390x = await partLayout(['linux/s390x']);
	await assertRefused([ppc], ['linux/ppc64le', 'linux/riscv64'], /no result holds an image for linux\/riscv64/, 'E_MERGE');
	await assertRefused([ppc, s390x], ['linux/ppc64le'], /node-1 holds an image for linux\/s390x, which was not asked for/, 'E_MERGE');
});

test('an image with no platform in its descriptor or config is refused when there is more than one part', async () => {
	const ppc = await partLayout(['linux/ppc64le']);
	const {dir: blank} = await platformlessPart();
	await assertRefused([ppc, blank], ['linux/ppc64le', 'linux/s390x'], /node-1: blob sha256:[0-9a-f]{12}… \(a manifest listed in index.json\) names no platform, and neither does its config/, 'E_MERGE');
});

test('one part whose one image says no platform anywhere is listed as it is (nothing to tell apart)', async () => {
	const {dir, manifest} = await platformlessPart();
	const {dest} = await merge([dir], ['linux/s390x']);
	assert.deepEqual(mergedIndex(dest).index.manifests, [manifest]);
});

test('a descriptor whose platform disagrees with its config is refused', async () => {
	const ppc = await partLayout(['linux/ppc64le']);
	const s390x = await partLayout(['linux/s390x'], {single: true});
	const outer = await readIndexJson(s390x.dir);
	fs.writeFileSync(path.join(s390x.dir, 'index.json'), JSON.stringify({...outer, manifests: [{...outer.manifests[0], platform: {os: 'linux', architecture: 'riscv64'}}]}));
	await assertRefused([ppc, s390x], ['linux/ppc64le', 'linux/riscv64'], /is listed as linux\/riscv64 but its config says linux\/s390x/, 'E_BAD_IMAGE');
});

test('a tampered layer (same size, other bytes) is refused while it is copied, and also when it would be linked', async () => {
	for (const link of [true, false]) {
		const ppc = await partLayout(['linux/ppc64le']);
		const s390x = await partLayout(['linux/s390x']);
		const manifest = readJson<{layers: Descriptor[]}>(blobPath(s390x.dir, s390x.images.get('linux/s390x')!.digest));
		const layerFile = blobPath(s390x.dir, manifest.layers[1]!.digest);
		const bytes = fs.readFileSync(layerFile);
		bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
		fs.writeFileSync(layerFile, bytes);
		await assertRefused([ppc, s390x], ['linux/ppc64le', 'linux/s390x'], /node-1: blob sha256:[0-9a-f]{12}… \(layer 2 of linux\/s390x\) does not match its digest/, 'E_BAD_IMAGE', {link});
		assert.deepEqual(fs.readFileSync(layerFile), bytes, 'the part is not changed');
	}
});

test('a blob that is a symlink inside a part, even to a file with the right bytes, is refused', async () => {
	const ppc = await partLayout(['linux/ppc64le']);
	const s390x = await partLayout(['linux/s390x']);
	const manifest = readJson<{layers: Descriptor[]}>(blobPath(s390x.dir, s390x.images.get('linux/s390x')!.digest));
	const layerFile = blobPath(s390x.dir, manifest.layers[1]!.digest);
	const elsewhere = path.join(fresh('elsewhere'));
	fs.renameSync(layerFile, elsewhere);
	fs.symlinkSync(elsewhere, layerFile);
	await assertRefused([ppc, s390x], ['linux/ppc64le', 'linux/s390x'], /\(layer 2 of linux\/s390x\) is a symbolic link, not a file/, 'E_BAD_IMAGE');
});

test('an index.json over the JSON size cap is refused without being read whole', async () => {
	const ppc = await partLayout(['linux/ppc64le']);
	const s390x = await partLayout(['linux/s390x']);
	const outer = await readIndexJson(s390x.dir);
	fs.writeFileSync(path.join(s390x.dir, 'index.json'), JSON.stringify({...outer, annotations: {padding: 'x'.repeat(5 * 1024 * 1024)}}));
	await assertRefused([ppc, s390x], ['linux/ppc64le', 'linux/s390x'], /node-1: index\.json is 5\.0 MiB; a JSON document may be at most 4 MiB/, 'E_BAD_IMAGE');
});

test('a part whose indexes list more descriptors than exobuild reads is refused', async () => {
	const ppc = await partLayout(['linux/ppc64le']);
	const s390x = await partLayout(['linux/s390x'], {single: true});
	const outer = await readIndexJson(s390x.dir);
	fs.writeFileSync(path.join(s390x.dir, 'index.json'), JSON.stringify({...outer, manifests: Array.from({length: 1001}, () => outer.manifests[0])}));
	await assertRefused([ppc, s390x], ['linux/ppc64le', 'linux/s390x'], /more than 1000 descriptors/, 'E_BAD_IMAGE');
});

test('buildx\'s --annotation grammar: types, a platform, several types at once; an unknown type is a usage error', () => {
	assert.deepEqual(parseAnnotation('org.example.a', 'v'), [{type: 'manifest', platform: undefined, key: 'org.example.a', value: 'v'}]);
	assert.deepEqual(parseAnnotation('index,manifest-descriptor[linux/arm64/v8]:k', 'v'), [
		{type: 'index', platform: undefined, key: 'k', value: 'v'},
		{type: 'manifest-descriptor', platform: 'linux/arm64', key: 'k', value: 'v'},
	]);
	assert.throws(() => parseAnnotation('indx:k', 'v'), (error: unknown) => isUserError(error) && error.exitCode === 2 && /unknown annotation type "?indx/.test(error.message));
	assert.throws(() => parseAnnotation('index:', 'v'), /the key is empty/);
	assert.deepEqual(['a', 'index:b', 'manifest-descriptor[linux/arm/v7]:c', 'index-descriptor:d'].flatMap(key => parseAnnotation(key, 'v')).map(buildkitAnnotationAttribute), [
		'annotation.a', 'annotation-index.b', 'annotation-manifest-descriptor[linux/arm/v7].c', 'annotation-index-descriptor.d',
	]);
});

test('a merge aborted while it writes blobs stops there and removes what it wrote', async () => {
	const ppc = await partLayout(['linux/ppc64le']);
	const s390x = await partLayout(['linux/s390x']);
	const parent = fresh('aborted');
	fs.mkdirSync(parent);
	// Failure injection: a signal that turns aborted at its 4th check (the parts are read after 2; each blob written checks once).
	let checks = 0;
	const failingSignal = {
		get aborted() {
			return checks >= 4;
		},
		throwIfAborted() {
			if (++checks >= 4) {
				throw new DOMException('the build was stopped', 'AbortError');
			}
		},
	} as unknown as AbortSignal;
	await assert.rejects(mergeLayouts([ppc.dir, s390x.dir], path.join(parent, 'oci-layout'), {platforms: ['linux/ppc64le', 'linux/s390x'], signal: failingSignal}), {name: 'AbortError'});
	assert.ok(checks >= 4, 'it stopped while writing blobs');
	assert.deepEqual(fs.readdirSync(parent), [], 'the partly written layout is removed');
});
