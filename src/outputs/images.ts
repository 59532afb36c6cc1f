/**
 * What every exporter needs from the sandbox's OCI layout: the images it holds (one per
 * platform, through nested indexes), each layer verified against its digest and opened as an
 * uncompressed tar stream, and buildx's folder name for a platform.
 */
import type {Readable} from 'node:stream';
import {UserError} from '../errors.js';
import {badImageCode, layoutSource, openBlob, printable, readBlobStream, type LayoutRef} from '../oci/blobs.js';
import {imagesOfLayout, verifyImageLayers, type PlatformImage} from '../oci/layout.js';
import {platformIdOf, type Descriptor} from '../oci/schema.js';
import {gunzipped, sniffCompression, type Compression as SniffedCompression} from '../oci/tar-entries.js';

export const outputErrorCode = 'E_OUTPUT';

export interface SelectedImage extends PlatformImage {
	/** buildx's folder name for the platform: linux_arm64, linux_arm_v7. */
	readonly folder: string;
}

/** linux/arm/v7 → linux_arm_v7, as BuildKit names per-platform folders of local and tar outputs. */
export const platformFolder = (platformId: string): string => platformId.replaceAll('/', '_');

const normaliseId = (id: string): string => {
	const [os = '', architecture = '', variant] = id.split('/');
	return platformIdOf({os, architecture, variant});
};

/**
 * The images of a layout (by default the engine's export: its errors exit 1), in index order.
 * `platforms` (ids such as linux/arm/v7), when given, selects those images, in that order; a
 * platform the layout lacks is a UserError.
 */
export const selectImages = async (layout: LayoutRef, platforms?: readonly string[]): Promise<SelectedImage[]> => {
	const source = layoutSource(layout);
	const found = await imagesOfLayout(source);
	const byPlatform = new Map<string, PlatformImage>();
	for (const image of found) {
		const other = byPlatform.get(image.platform);
		if (other !== undefined && other.descriptor.digest !== image.descriptor.digest) {
			throw new UserError(`${source.label} holds two images for ${printable(image.platform, 60)} (${other.descriptor.digest}, ${image.descriptor.digest})`, {
				hint: 'build each platform once', code: badImageCode, exitCode: source.exitCode,
			});
		}

		byPlatform.set(image.platform, image);
	}

	if (byPlatform.size === 0) {
		throw new UserError(`${source.label}/index.json leads to no image`, {hint: 'run the build again with --progress plain to see the engine\'s output', code: badImageCode, exitCode: source.exitCode});
	}

	const wanted = platforms === undefined || platforms.length === 0 ? [...byPlatform.keys()] : [...new Set(platforms.map(normaliseId))];
	const missing = wanted.filter(id => !byPlatform.has(id));
	if (missing.length > 0) {
		throw new UserError(`the build has no image for ${missing.join(', ')}`, {hint: `it has: ${[...byPlatform.keys()].map(id => printable(id, 60)).join(', ')}`, code: outputErrorCode, exitCode: source.exitCode});
	}

	return wanted.map(id => ({...byPlatform.get(id)!, folder: platformFolder(id)}));
};

/** Checks each layer blob (a regular file in the layout, streamed through a hash) against its size and digest before anything is written. */
export const verifyLayers = async (layout: LayoutRef, images: readonly PlatformImage[]): Promise<void> => verifyImageLayers(layout, images);

/** The compressions an output can read (Node 20's zlib has no zstd). */
export type Compression = Exclude<SniffedCompression, 'zstd'>;

/** A layer's compression, from its first bytes (BuildKit's media types agree; zstd is refused: Node 20's zlib has no zstd). */
export const layerCompression = async (layout: LayoutRef, layer: Descriptor): Promise<Compression> => {
	const {handle} = await openBlob(layout, layer);
	let compression: SniffedCompression;
	try {
		compression = await sniffCompression(handle);
	} finally {
		await handle.close();
	}

	if (layer.mediaType.endsWith('zstd') || compression === 'zstd') {
		throw new UserError(`layer ${layer.digest} is zstd-compressed (${printable(layer.mediaType)}), which exobuild cannot decompress for this output`, {
			hint: 'build with gzip or uncompressed layers (the default), or use --output type=oci',
			code: outputErrorCode,
			exitCode: 2,
		});
	}

	return compression;
};

/** The layer as an uncompressed tar stream, its compressed bytes checked against its digest as they are read. */
export const openLayer = async (layout: LayoutRef, layer: Descriptor): Promise<Readable> => {
	const compression = await layerCompression(layout, layer);
	const source = await readBlobStream(layout, layer);
	if (compression === 'none') {
		return source;
	}

	return gunzipped(source);
};
