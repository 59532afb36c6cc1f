/**
 * Reading OCI image layout folders: blobs verified by digest, the manifest of each platform
 * found through index.json (directly, or through a nested image index as BuildKit writes), read
 * through blobs.ts's checks (regular files inside the layout, bounded reads, one-line errors),
 * one document at a time, with nesting depth and the number of descriptors capped.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {UserError} from '../errors.js';
import {
	blobName, layoutError, layoutSource, ociLimits, printable, quoted, readIndexFile, readJsonBlob, readSmallBlob, shortDigest, userLayout, verifyBlob, verifyBlobRemembered,
	type BlobRef, type DocumentKind, type LayoutRef, type LayoutSource,
} from './blobs.js';
import {
	configSchema, indexSchema, isAttestationManifest, isDigest, isIndexMediaType, manifestSchema, mediaTypes, platformIdOf, refNameAnnotation,
	type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest,
} from './schema.js';

/** Where a blob lives in a layout. Anything but a sha256 digest is refused (no `../` in a path). */
export const blobPath = (layoutDir: string, digest: string): string => {
	if (!isDigest(digest)) {
		throw new Error(`not a sha256 digest: ${quoted(digest)}`);
	}

	return path.join(layoutDir, 'blobs', ...digest.split(':'));
};

export const sha256 = (data: Buffer | string): string => `sha256:${crypto.createHash('sha256').update(data).digest('hex')}`;

export const indexKind: DocumentKind<ImageIndex> = {name: 'an image index', schema: indexSchema};
export const manifestKind: DocumentKind<ImageManifest> = {name: 'an image manifest', schema: manifestSchema};
export const configKind: DocumentKind<ImageConfig> = {name: 'an image config', schema: configSchema};

/** Reads a small blob (a JSON document, at most ociLimits.jsonBytes) and checks it against its digest and size. */
export const readBlob = async (layout: LayoutRef, descriptor: BlobRef, role?: string): Promise<Buffer> => readSmallBlob(layout, descriptor, role);

export const readIndexJson = async (layout: LayoutRef): Promise<ImageIndex> => readIndexFile(layout, indexKind);

/** An image manifest, checked against its descriptor. */
export const readManifest = async (layout: LayoutRef, descriptor: Descriptor, role?: string): Promise<ImageManifest> => readJsonBlob(layout, descriptor, role, manifestKind);

/** An image config, checked against its descriptor. */
export const readConfig = async (layout: LayoutRef, descriptor: Descriptor, role?: string): Promise<ImageConfig> => readJsonBlob(layout, descriptor, role, configKind);

export const isManifestMediaType = (mediaType: string): boolean => mediaType === mediaTypes.manifest || mediaType === mediaTypes.dockerManifest;

export interface PlatformImage {
	readonly platform: string;
	readonly descriptor: Descriptor;
	readonly manifest: ImageManifest;
	readonly config: ImageConfig;
}

/** One walk through a layout's indexes: the descriptors they list, counted against ociLimits.descriptors. */
export interface Walk {
	readonly source: LayoutSource;
	listed: number;
}

/** Counts `count` more descriptors met in a walk; past ociLimits.descriptors the walk is refused. */
export const countListed = (walk: Walk, count: number, what: string): void => {
	walk.listed += count;
	if (walk.listed > ociLimits.descriptors) {
		throw layoutError(walk.source, `${what} leads to more than ${ociLimits.descriptors} descriptors (nested indexes included), more than exobuild reads`, 'unreadable');
	}
};

/** Starts a walk at index.json: reads it and counts its entries. */
export const startWalk = async (layout: LayoutRef): Promise<{walk: Walk; index: ImageIndex}> => {
	const source = layoutSource(layout);
	const index = await readIndexJson(source);
	const walk: Walk = {source, listed: 0};
	countListed(walk, index.manifests.length, 'index.json');
	return {walk, index};
};

/** An image index met at `depth` (1: listed in index.json), read and its entries counted; too deep is refused unread. */
export const readNestedIndex = async (walk: Walk, descriptor: Descriptor, depth: number, listedIn: string): Promise<ImageIndex> => {
	const role = `listed in ${listedIn}`;
	if (depth > ociLimits.indexDepth) {
		throw layoutError(walk.source, `${blobName(descriptor.digest, role)} is an image index nested more than ${ociLimits.indexDepth} deep`, 'unreadable');
	}

	const index = await readJsonBlob(walk.source, descriptor, role, indexKind);
	countListed(walk, index.manifests.length, blobName(descriptor.digest, role));
	return index;
};

const platformText = (platform: Descriptor['platform']): string | undefined => (platform === undefined ? undefined : printable(platformIdOf(platform), 60));

/** What messages call the blobs of a manifest listed in `listedIn`. */
export const manifestRoles = (descriptor: Descriptor, listedIn: string): {manifest: string; config: string; layer: (position: number) => string} => {
	const platform = platformText(descriptor.platform);
	const owner = platform ?? `manifest ${shortDigest(descriptor.digest)}`;
	return {
		manifest: platform === undefined ? `a manifest listed in ${listedIn}` : `the manifest of ${platform}`,
		config: `the config of ${owner}`,
		layer: position => `layer ${position + 1} of ${owner}`,
	};
};

/** Every image under `descriptor`, depth first, one document at a time. */
const walkImages = async (walk: Walk, descriptor: Descriptor, depth: number, listedIn: string): Promise<PlatformImage[]> => {
	const {source} = walk;
	if (isIndexMediaType(descriptor.mediaType)) {
		const index = await readNestedIndex(walk, descriptor, depth, listedIn);
		const images: PlatformImage[] = [];
		for (const child of index.manifests) {
			images.push(...await walkImages(walk, child, depth + 1, `index ${shortDigest(descriptor.digest)}`));
		}

		return images;
	}

	if (!isManifestMediaType(descriptor.mediaType) || isAttestationManifest(descriptor)) {
		return []; // attestations and other artifacts
	}

	const roles = manifestRoles(descriptor, listedIn);
	const manifest = await readManifest(source, descriptor, roles.manifest);
	if (manifest.config.mediaType !== mediaTypes.config && manifest.config.mediaType !== 'application/vnd.docker.container.image.v1+json') {
		return [];
	}

	const config = await readConfig(source, manifest.config, roles.config);
	return [{platform: platformIdOf(config), descriptor, manifest, config}];
};

/** Every image (manifest) under a descriptor listed in index.json, with its platform taken from its config. */
export const imagesUnder = async (layout: LayoutRef, descriptor: Descriptor): Promise<PlatformImage[]> =>
	walkImages({source: layoutSource(layout), listed: 1}, descriptor, 1, 'index.json');

/** Every image of a layout: index.json's entries and everything under them, in index order. */
export const imagesOfLayout = async (layout: LayoutRef): Promise<PlatformImage[]> => {
	const {walk, index} = await startWalk(layout);
	const images: PlatformImage[] = [];
	for (const descriptor of index.manifests) {
		images.push(...await walkImages(walk, descriptor, 1, 'index.json'));
	}

	return images;
};

/**
 * Checks each layer of `images` (each distinct digest once, one at a time): a regular file inside
 * the layout with its descriptor's size, streamed through a hash that must give its digest. With
 * `remember`, an unchanged file's digest comes from exobuild's cache (verifyBlobRemembered).
 */
export const verifyImageLayers = async (layout: LayoutRef, images: readonly PlatformImage[], options: {remember?: boolean} = {}): Promise<void> => {
	const checked = new Set<string>();
	const verify = options.remember === true ? verifyBlobRemembered : verifyBlob;
	for (const image of images) {
		for (const [position, layer] of image.manifest.layers.entries()) {
			if (!checked.has(layer.digest)) {
				await verify(layout, layer, `layer ${position + 1} of ${printable(image.platform, 60)}`);
				checked.add(layer.digest);
			}
		}
	}
};

export interface ResolvedLayout {
	/** The descriptor named in index.json that was chosen (index or manifest). */
	readonly top: Descriptor;
	readonly topDigest: string;
	/** Manifest descriptor per requested platform id. */
	readonly platforms: ReadonlyMap<string, Descriptor>;
}

/** The first few of a list, for a hint. */
const some = (items: readonly string[], count = 5): string => (items.length > count ? `${items.slice(0, count).join(', ')} and ${items.length - count} more` : items.join(', '));

const pickTop = (index: ImageIndex, source: LayoutSource, selector: {name: string; ref?: string | undefined; digest?: string | undefined}): Descriptor => {
	const where = source.label;
	if (selector.digest !== undefined) {
		const found = index.manifests.find(descriptor => descriptor.digest === selector.digest);
		if (found === undefined) {
			throw new UserError(`${where}: index.json lists no image ${selector.digest}`, {hint: `it lists: ${some(index.manifests.map(d => d.digest))}`, code: 'E_BUILD_CONTEXT', exitCode: 2});
		}

		return found;
	}

	if (selector.ref !== undefined) {
		const found = index.manifests.find(descriptor => descriptor.annotations?.[refNameAnnotation] === selector.ref);
		if (found === undefined) {
			const refs = index.manifests.map(d => d.annotations?.[refNameAnnotation]).filter((ref): ref is string => ref !== undefined).map(ref => printable(ref, 60));
			throw new UserError(`${where}: no image tagged "${selector.ref}"`, {hint: refs.length > 0 ? `tags in the layout: ${some(refs)}` : 'the layout has no tags; pin an image with @sha256:DIGEST', code: 'E_BUILD_CONTEXT', exitCode: 2});
		}

		return found;
	}

	if (index.manifests.length !== 1) {
		throw new UserError(`${where}: index.json lists ${index.manifests.length} images`, {hint: `choose one: oci-layout://DIR:TAG or oci-layout://DIR@sha256:DIGEST (digests: ${some(index.manifests.map(d => d.digest))})`, code: 'E_BUILD_CONTEXT', exitCode: 2});
	}

	return index.manifests[0]!;
};

/**
 * Finds, in a user's OCI layout (--build-context), the manifest of every requested platform,
 * and verifies each of their layers (size and digest) before any sandbox starts (with
 * `rememberDigests`, an unchanged layer file is not hashed again: verifyBlobRemembered). A layout that does not serve one of them is
 * refused naming the platforms it does serve; a bad blob is refused naming the blob (exit 2).
 */
export const resolvePlatformManifests = async (
	layoutDir: string,
	platformIds: readonly string[],
	selector: {name: string; ref?: string | undefined; digest?: string | undefined},
	options: {rememberDigests?: boolean} = {},
): Promise<ResolvedLayout> => {
	const source = userLayout(layoutDir, `--build-context ${selector.name} (${layoutDir})`);
	const {walk, index} = await startWalk(source);
	const top = pickTop(index, source, selector);
	const images = await walkImages(walk, top, 1, 'index.json');
	const byPlatform = new Map<string, PlatformImage>();
	for (const image of images) {
		if (!byPlatform.has(image.platform)) {
			byPlatform.set(image.platform, image);
		}
	}

	const missing = platformIds.filter(id => !byPlatform.has(id));
	if (missing.length > 0) {
		throw new UserError(`--build-context ${selector.name} has no image for ${missing.join(', ')}`, {
			hint: `the layout serves: ${some([...byPlatform.keys()].map(id => printable(id, 60)), 10) || 'nothing'}; build only those platforms or add the missing ones to the layout`,
			code: 'E_BUILD_CONTEXT',
			exitCode: 2,
		});
	}

	await verifyImageLayers(source, platformIds.map(id => byPlatform.get(id)!), {remember: options.rememberDigests === true});

	return {top, topDigest: top.digest, platforms: new Map(platformIds.map(id => [id, byPlatform.get(id)!.descriptor]))};
};

/**
 * Writes a one-platform view of a layout: its own oci-layout and index.json naming exactly one
 * manifest, tagged `refName`, and `blobs` as a symlink to the original layout's blobs at the path
 * the sandbox sees them. `buildah pull oci:VIEW:REFNAME` stores the image under REFNAME read as
 * an image reference (debian:stable → docker.io/library/debian:stable), which is what a
 * `FROM REFNAME` resolves to: no separate tag step.
 */
export const writePlatformView = async (manifest: Descriptor, viewDir: string, blobsPathInSandbox: string, refName: string): Promise<void> => {
	await fs.mkdir(viewDir, {recursive: true});
	const index: ImageIndex = {
		schemaVersion: 2,
		manifests: [{mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size, annotations: {[refNameAnnotation]: refName}}],
	};
	await fs.writeFile(path.join(viewDir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}\n');
	await fs.writeFile(path.join(viewDir, 'index.json'), `${JSON.stringify(index)}\n`);
	await fs.symlink(blobsPathInSandbox, path.join(viewDir, 'blobs'));
};
