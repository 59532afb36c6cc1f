/**
 * Reading OCI image layout folders: blobs verified by digest, the manifest of each platform
 * found through index.json (directly, or through a nested image index as BuildKit writes).
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {UserError} from '../errors.js';
import {
	configSchema, descriptorSchema, indexSchema, isIndexMediaType, manifestSchema, mediaTypes, platformIdOf, refNameAnnotation,
	type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest,
} from './schema.js';

export const blobPath = (layoutDir: string, digest: string): string => path.join(layoutDir, 'blobs', ...digest.split(':'));

export const sha256 = (data: Buffer | string): string => `sha256:${crypto.createHash('sha256').update(data).digest('hex')}`;

/** Reads a blob and checks it against its digest (and size, when given). */
export const readBlob = async (layoutDir: string, descriptor: Pick<Descriptor, 'digest'> & {size?: number}): Promise<Buffer> => {
	const data = await fs.readFile(blobPath(layoutDir, descriptor.digest));
	if (sha256(data) !== descriptor.digest || (descriptor.size !== undefined && data.length !== descriptor.size)) {
		throw new Error(`blob ${descriptor.digest} in ${layoutDir} does not match its digest or size`);
	}

	return data;
};

export const readIndexJson = async (layoutDir: string): Promise<ImageIndex> =>
	indexSchema.parse(JSON.parse(await fs.readFile(path.join(layoutDir, 'index.json'), 'utf8')));

export const readJsonBlob = async <T>(layoutDir: string, descriptor: Descriptor, parse: (value: unknown) => T): Promise<T> =>
	parse(JSON.parse((await readBlob(layoutDir, descriptor)).toString('utf8')));

export interface PlatformImage {
	readonly platform: string;
	readonly descriptor: Descriptor;
	readonly manifest: ImageManifest;
	readonly config: ImageConfig;
}

/** Every image (manifest) under a descriptor, with its platform taken from its config. */
export const imagesUnder = async (layoutDir: string, descriptor: Descriptor): Promise<PlatformImage[]> => {
	if (isIndexMediaType(descriptor.mediaType)) {
		const index = await readJsonBlob(layoutDir, descriptor, value => indexSchema.parse(value));
		const nested = await Promise.all(index.manifests.map(async child => imagesUnder(layoutDir, child)));
		return nested.flat();
	}

	if (descriptor.mediaType !== mediaTypes.manifest && descriptor.mediaType !== mediaTypes.dockerManifest) {
		return []; // attestations and other artifacts
	}

	const manifest = await readJsonBlob(layoutDir, descriptor, value => manifestSchema.parse(value));
	if (manifest.config.mediaType !== mediaTypes.config && manifest.config.mediaType !== 'application/vnd.docker.container.image.v1+json') {
		return [];
	}

	const config = await readJsonBlob(layoutDir, manifest.config, value => configSchema.parse(value));
	return [{platform: platformIdOf(config), descriptor: descriptorSchema.parse(descriptor), manifest, config}];
};

export interface ResolvedLayout {
	/** The descriptor named in index.json that was chosen (index or manifest). */
	readonly top: Descriptor;
	readonly topDigest: string;
	/** Manifest descriptor per requested platform id. */
	readonly platforms: ReadonlyMap<string, Descriptor>;
}

const pickTop = (index: ImageIndex, layoutDir: string, selector: {name: string; ref?: string | undefined; digest?: string | undefined}): Descriptor => {
	const where = `--build-context ${selector.name} (${layoutDir})`;
	if (selector.digest !== undefined) {
		const found = index.manifests.find(descriptor => descriptor.digest === selector.digest);
		if (found === undefined) {
			throw new UserError(`${where}: index.json lists no image ${selector.digest}`, {hint: `it lists: ${index.manifests.map(d => d.digest).join(', ')}`, code: 'E_BUILD_CONTEXT'});
		}

		return found;
	}

	if (selector.ref !== undefined) {
		const found = index.manifests.find(descriptor => descriptor.annotations?.[refNameAnnotation] === selector.ref);
		if (found === undefined) {
			const refs = index.manifests.map(d => d.annotations?.[refNameAnnotation]).filter(Boolean);
			throw new UserError(`${where}: no image tagged "${selector.ref}"`, {hint: refs.length > 0 ? `tags in the layout: ${refs.join(', ')}` : 'the layout has no tags; pin an image with @sha256:DIGEST', code: 'E_BUILD_CONTEXT'});
		}

		return found;
	}

	if (index.manifests.length !== 1) {
		throw new UserError(`${where}: index.json lists ${index.manifests.length} images`, {hint: `choose one: oci-layout://DIR:TAG or oci-layout://DIR@sha256:DIGEST (digests: ${index.manifests.map(d => d.digest).join(', ')})`, code: 'E_BUILD_CONTEXT'});
	}

	return index.manifests[0]!;
};

/**
 * Finds, in an OCI layout, the manifest of every requested platform. A layout that does not
 * serve one of them is refused naming the platforms it does serve.
 */
export const resolvePlatformManifests = async (
	layoutDir: string,
	platformIds: readonly string[],
	selector: {name: string; ref?: string | undefined; digest?: string | undefined},
): Promise<ResolvedLayout> => {
	let index: ImageIndex;
	try {
		index = await readIndexJson(layoutDir);
	} catch (error) {
		throw new UserError(`--build-context ${selector.name}: ${layoutDir}/index.json is not a valid OCI index`, {hint: 'point it at an OCI image layout folder', code: 'E_BUILD_CONTEXT', cause: error});
	}

	const top = pickTop(index, layoutDir, selector);
	let images: PlatformImage[];
	try {
		images = await imagesUnder(layoutDir, top);
	} catch (error) {
		throw new UserError(`--build-context ${selector.name}: the layout at ${layoutDir} is incomplete or corrupt (${(error as Error).message})`, {hint: 'export the base image again', code: 'E_BUILD_CONTEXT', cause: error});
	}

	const byPlatform = new Map(images.map(image => [image.platform, image.descriptor] as const));
	const missing = platformIds.filter(id => !byPlatform.has(id));
	if (missing.length > 0) {
		throw new UserError(`--build-context ${selector.name} has no image for ${missing.join(', ')}`, {
			hint: `the layout serves: ${[...byPlatform.keys()].join(', ') || 'nothing'}; build only those platforms or add the missing ones to the layout`,
			code: 'E_BUILD_CONTEXT',
		});
	}

	return {top, topDigest: top.digest, platforms: new Map(platformIds.map(id => [id, byPlatform.get(id)!]))};
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
