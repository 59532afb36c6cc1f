/**
 * What every exporter needs from the sandbox's OCI layout: the images it holds (one per
 * platform, through nested indexes), each layer verified against its digest and opened as an
 * uncompressed tar stream, and buildx's folder name for a platform.
 */
import {createReadStream} from 'node:fs';
import fs from 'node:fs/promises';
import {pipeline, type Readable} from 'node:stream';
import zlib from 'node:zlib';
import {UserError} from '../errors.js';
import {blobPath, imagesUnder, readIndexJson, type PlatformImage} from '../oci/layout.js';
import {platformIdOf, type Descriptor} from '../oci/schema.js';
import {fileDigest} from '../oci/writer.js';

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
 * The images of a layout, in index order. `platforms` (ids such as linux/arm/v7), when given,
 * selects those images, in that order; a platform the layout lacks is a UserError.
 */
export const selectImages = async (layoutDir: string, platforms?: readonly string[]): Promise<SelectedImage[]> => {
	const index = await readIndexJson(layoutDir);
	const found = (await Promise.all(index.manifests.map(async descriptor => imagesUnder(layoutDir, descriptor)))).flat();
	const byPlatform = new Map<string, PlatformImage>();
	for (const image of found) {
		const other = byPlatform.get(image.platform);
		if (other !== undefined && other.descriptor.digest !== image.descriptor.digest) {
			throw new Error(`${layoutDir} holds two images for ${image.platform} (${other.descriptor.digest}, ${image.descriptor.digest})`);
		}

		byPlatform.set(image.platform, image);
	}

	if (byPlatform.size === 0) {
		throw new Error(`${layoutDir}/index.json leads to no image`);
	}

	const wanted = platforms === undefined || platforms.length === 0 ? [...byPlatform.keys()] : [...new Set(platforms.map(normaliseId))];
	const missing = wanted.filter(id => !byPlatform.has(id));
	if (missing.length > 0) {
		throw new UserError(`the build has no image for ${missing.join(', ')}`, {hint: `it has: ${[...byPlatform.keys()].join(', ')}`, code: outputErrorCode});
	}

	return wanted.map(id => ({...byPlatform.get(id)!, folder: platformFolder(id)}));
};

/** Checks each layer blob against its digest before anything is written. */
export const verifyLayers = async (layoutDir: string, images: readonly PlatformImage[]): Promise<void> => {
	const checked = new Set<string>();
	for (const layer of images.flatMap(image => image.manifest.layers)) {
		if (checked.has(layer.digest)) {
			continue;
		}

		// eslint-disable-next-line no-await-in-loop
		const stat = await fs.stat(blobPath(layoutDir, layer.digest)).catch(() => undefined);
		if (stat === undefined) {
			throw new Error(`layer ${layer.digest} is missing from ${layoutDir}`);
		}

		// eslint-disable-next-line no-await-in-loop
		const actual = await fileDigest(blobPath(layoutDir, layer.digest));
		if (actual !== layer.digest || stat.size !== layer.size) {
			throw new Error(`layer ${layer.digest} in ${layoutDir} is corrupt (${stat.size} bytes hashing to ${actual}; the manifest says ${layer.size} bytes)`);
		}

		checked.add(layer.digest);
	}
};

export type Compression = 'none' | 'gzip';

/** A layer's compression, from its first bytes (BuildKit's media types agree; zstd is refused: Node 20's zlib has no zstd). */
export const layerCompression = async (layoutDir: string, layer: Descriptor): Promise<Compression> => {
	const handle = await fs.open(blobPath(layoutDir, layer.digest), 'r');
	let magic: Buffer;
	try {
		const buffer = Buffer.alloc(4);
		const {bytesRead} = await handle.read(buffer, 0, 4, 0);
		magic = buffer.subarray(0, bytesRead);
	} finally {
		await handle.close();
	}

	if (layer.mediaType.endsWith('zstd') || magic.equals(Buffer.from([0x28, 0xB5, 0x2F, 0xFD]))) {
		throw new UserError(`layer ${layer.digest} is zstd-compressed (${layer.mediaType}), which exobuild cannot decompress for this output`, {
			hint: 'build with gzip or uncompressed layers (the default), or use --output type=oci',
			code: outputErrorCode,
		});
	}

	return magic[0] === 0x1F && magic[1] === 0x8B ? 'gzip' : 'none';
};

/** The layer as an uncompressed tar stream. */
export const openLayer = async (layoutDir: string, layer: Descriptor): Promise<Readable> => {
	const compression = await layerCompression(layoutDir, layer);
	const source = createReadStream(blobPath(layoutDir, layer.digest));
	if (compression === 'none') {
		return source;
	}

	// The callback form destroys both streams when either fails or the reader gives up; the reader sees the error.
	return pipeline(source, zlib.createGunzip(), () => undefined);
};
