/**
 * One OCI layout from several: the results of one BuildKit solve per node (each for one or more
 * platforms) become one layout whose index.json names one image index listing every platform's
 * manifest once, in the order of --platform, with the user's index and manifest-descriptor
 * annotations, as buildx combines the results of a builder's nodes (docker/buildx v0.19
 * build/build.go extractIndexAnnotations, util/imagetools/create.go Combine).
 *
 * The parts are untrusted bytes: every document is read through blobs.ts's safe readers (regular
 * files inside the layout, no symlink followed, reads bounded by the descriptor's size), every blob
 * is hashed while it is copied (or after it is hard-linked) and refused unless it matches its
 * digest. Each blob is written once. The result is what readExportedImage and writeOutput read
 * (src/pipeline/deliver-outputs.ts), so a merged build is delivered as a local one is.
 */
import crypto from 'node:crypto';
import {constants, type Stats} from 'node:fs';
import fs, {type FileHandle} from 'node:fs/promises';
import path from 'node:path';
import {UserError} from '../errors.js';
import {parseAnnotations, type RequestedAnnotation} from './annotations.js';
import {
	blobName, layoutError, layoutSource, openBlob, printable, shortDigest, type LayoutRef, type LayoutSource,
} from './blobs.js';
import {
	blobPath, countListed, isManifestMediaType, manifestRoles, readConfig, readManifest, readNestedIndex, startWalk,
} from './layout.js';
import {
	containerdNameAnnotation, isAttestationManifest, isIndexMediaType, mediaTypes, platformIdOf, refNameAnnotation,
	type Descriptor, type ImageIndex, type ImageManifest,
} from './schema.js';

export const mergeErrorCode = 'E_MERGE';

/** BuildKit names an attestation's image in this annotation (moby/buildkit v0.32.2 docs/attestations/attestation-storage.md). */
const attestationSubjectAnnotation = 'vnd.docker.reference.digest';

export interface MergeOptions {
	/** The platforms asked for (ids such as linux/arm/v7), in the order of --platform: the order of the merged index. Each must be in exactly one part. */
	readonly platforms: readonly string[];
	/** The build's --annotation values (key, value), buildx's grammar (./annotations.ts). */
	readonly annotations?: ReadonlyArray<readonly [string, string]>;
	/**
	 * Hard-link a blob instead of copying it when that is safe: the same filesystem, a regular
	 * file of this user with no other link. Its bytes are still hashed before it counts. Only for
	 * parts nothing writes to any more (default true).
	 */
	readonly link?: boolean;
	readonly signal?: AbortSignal;
}

export interface MergedImage {
	readonly platform: string;
	/** The manifest's descriptor as the merged index lists it. */
	readonly descriptor: Descriptor;
	/** Which part (position in `parts`) it came from. */
	readonly part: number;
}

export interface MergedLayout {
	readonly dir: string;
	/** index.json's one entry: the merged image index. */
	readonly top: Descriptor;
	readonly images: readonly MergedImage[];
	/** The digest of every blob in the merged layout. */
	readonly blobs: readonly string[];
	/** How many blobs were hard-linked rather than copied. */
	readonly linked: number;
}

/** An image found in a part. */
interface FoundImage {
	readonly part: number;
	/** The normalised platform id, or undefined if neither the descriptor nor the config says. */
	readonly platform: string | undefined;
	readonly descriptor: Descriptor;
	readonly manifest: ImageManifest;
	readonly roles: ReturnType<typeof manifestRoles>;
}

interface FoundAttestation {
	readonly part: number;
	readonly descriptor: Descriptor;
	readonly manifest: ImageManifest;
	readonly roles: ReturnType<typeof manifestRoles>;
}

interface PartContent {
	readonly images: FoundImage[];
	readonly attestations: FoundAttestation[];
}

const mergeError = (message: string, hint: string): UserError => new UserError(message, {hint, code: mergeErrorCode});

const normalisedId = (id: string): string => {
	const [os = '', architecture = '', variant] = id.split('/');
	return platformIdOf({os, architecture, variant});
};

/** The image's platform: its descriptor's, else its config's; the two must agree. */
const platformOf = async (source: LayoutSource, descriptor: Descriptor, manifest: ImageManifest, roles: FoundImage['roles']): Promise<Descriptor['platform']> => {
	const config = await readConfig(source, manifest.config, roles.config);
	const fromConfig = config.os === '' || config.architecture === ''
		? undefined
		: {os: config.os, architecture: config.architecture, ...(config.variant === undefined || config.variant === '' ? {} : {variant: config.variant})};
	if (descriptor.platform !== undefined && fromConfig !== undefined && platformIdOf(descriptor.platform) !== platformIdOf(fromConfig)) {
		throw layoutError(source, `${blobName(descriptor.digest, roles.manifest)} is listed as ${printable(platformIdOf(descriptor.platform), 60)} but its config says ${printable(platformIdOf(fromConfig), 60)}`, 'corrupt');
	}

	return descriptor.platform ?? fromConfig;
};

/** Every image and attestation of one part, depth first through its indexes, in index order. */
const readPart = async (layout: LayoutRef, part: number): Promise<PartContent> => {
	const {walk, index} = await startWalk(layout);
	const content: PartContent = {images: [], attestations: []};
	const visit = async (descriptor: Descriptor, depth: number, listedIn: string): Promise<void> => {
		if (isIndexMediaType(descriptor.mediaType)) {
			const nested = await readNestedIndex(walk, descriptor, depth, listedIn);
			for (const child of nested.manifests) {
				await visit(child, depth + 1, `index ${shortDigest(descriptor.digest)}`);
			}

			return;
		}

		if (!isManifestMediaType(descriptor.mediaType)) {
			return; // Not an image: nothing the outputs read either.
		}

		const roles = manifestRoles(descriptor, listedIn);
		const manifest = await readManifest(walk.source, descriptor, roles.manifest);
		countListed(walk, 1 + manifest.layers.length, blobName(descriptor.digest, roles.manifest));
		if (isAttestationManifest(descriptor)) {
			content.attestations.push({part, descriptor, manifest, roles});
			return;
		}

		if (manifest.config.mediaType !== mediaTypes.config && manifest.config.mediaType !== 'application/vnd.docker.container.image.v1+json') {
			return; // An artifact, not an image (the outputs skip it too: src/oci/layout.ts walkImages).
		}

		const platform = await platformOf(walk.source, descriptor, manifest, roles);
		content.images.push({part, platform: platform === undefined ? undefined : platformIdOf(platform), descriptor: {...descriptor, ...(platform === undefined ? {} : {platform})}, manifest, roles});
	};

	for (const descriptor of index.manifests) {
		await visit(descriptor, 1, 'index.json');
	}

	return content;
};

/** The descriptor annotations a part gave an image, without the names of the part's own image (the merged image is named by its tags). */
const keptAnnotations = (annotations: Descriptor['annotations']): Record<string, string> =>
	Object.fromEntries(Object.entries(annotations ?? {}).filter(([key]) => key !== refNameAnnotation && key !== containerdNameAnnotation));

const withAnnotations = (descriptor: Descriptor, annotations: Record<string, string>): Descriptor => {
	const {annotations: _old, ...rest} = descriptor;
	return Object.keys(annotations).length === 0 ? rest : {...rest, annotations};
};

/**
 * The images in the order of `platforms`, each platform from exactly one part. An image whose
 * platform is unknown is taken only when it is the one image of the one part for one platform.
 */
const chooseImages = (sources: readonly LayoutSource[], contents: readonly PartContent[], platforms: readonly string[]): FoundImage[] => {
	const byPlatform = new Map<string, FoundImage>();
	const unknown: FoundImage[] = [];
	for (const image of contents.flatMap(content => content.images)) {
		if (image.platform === undefined) {
			unknown.push(image);
			continue;
		}

		const other = byPlatform.get(image.platform);
		if (other === undefined) {
			byPlatform.set(image.platform, image);
		} else if (other.part !== image.part) {
			throw mergeError(`${sources[other.part]!.label} and ${sources[image.part]!.label} both hold an image for ${printable(image.platform, 60)}`, 'build each platform on one node only: check the --platform of each node (`exobuild node ls`) and --node');
		} else if (other.descriptor.digest !== image.descriptor.digest) {
			throw mergeError(`${sources[image.part]!.label} holds two images for ${printable(image.platform, 60)} (${shortDigest(other.descriptor.digest)}, ${shortDigest(image.descriptor.digest)})`, 'build each platform once');
		}
	}

	if (unknown.length > 0) {
		const single = sources.length === 1 && platforms.length === 1 && contents[0]!.images.length === 1;
		if (!single) {
			const image = unknown[0]!;
			throw mergeError(`${sources[image.part]!.label}: ${blobName(image.descriptor.digest, image.roles.manifest)} names no platform, and neither does its config`, 'with more than one result to merge, each image must say its platform (a descriptor platform or the config\'s os and architecture); export it again with BuildKit');
		}

		return unknown;
	}

	const missing = platforms.filter(id => !byPlatform.has(id));
	if (missing.length > 0) {
		throw mergeError(`no result holds an image for ${missing.join(', ')}`, `the results hold: ${[...byPlatform.keys()].map(id => printable(id, 60)).join(', ') || 'no image'}; run the build again with --progress plain to see each node's output`);
	}

	const extra = [...byPlatform.values()].find(image => !platforms.includes(image.platform!));
	if (extra !== undefined) {
		throw mergeError(`${sources[extra.part]!.label} holds an image for ${printable(extra.platform!, 60)}, which was not asked for (asked: ${platforms.join(', ')})`, 'check the --platform of each node (`exobuild node ls`) and --node');
	}

	return platforms.map(id => byPlatform.get(id)!);
};

const emptyDigest = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** Writes all of `chunk` at the file's current position. */
const writeAll = async (sink: FileHandle, chunk: Buffer): Promise<void> => {
	let offset = 0;
	while (offset < chunk.length) {
		const {bytesWritten} = await sink.write(chunk, offset, chunk.length - offset);
		offset += bytesWritten;
	}
};

/** The sha256 of the first `size` bytes of an opened file (never more), written to `sink` too when given. */
const hashOpened = async (handle: FileHandle, size: number, sink: FileHandle | undefined, signal: AbortSignal | undefined): Promise<{digest: string; bytes: number}> => {
	if (size === 0) {
		return {digest: emptyDigest, bytes: 0};
	}

	const hash = crypto.createHash('sha256');
	let bytes = 0;
	for await (const chunk of handle.createReadStream({start: 0, end: size - 1, autoClose: false, highWaterMark: 1024 * 1024}) as AsyncIterable<Buffer>) {
		signal?.throwIfAborted();
		hash.update(chunk);
		bytes += chunk.length;
		if (sink !== undefined) {
			await writeAll(sink, chunk);
		}
	}

	return {digest: `sha256:${hash.digest('hex')}`, bytes};
};

interface BlobWriter {
	readonly destDir: string;
	readonly destDevice: number;
	readonly link: boolean;
	readonly signal: AbortSignal | undefined;
	readonly written: Set<string>;
	linked: number;
}

const mismatch = (source: LayoutSource, digest: string, role: string, actual: {digest: string; bytes: number}, size: number): UserError =>
	layoutError(source, actual.bytes === size
		? `${blobName(digest, role)} does not match its digest (its content hashes to ${shortDigest(actual.digest)})`
		: `${blobName(digest, role)} changed while it was read (${actual.bytes} bytes of ${size})`, 'corrupt');

/** Links the opened blob into dest when that is safe; false when it was not linked (then it is copied). */
const tryLink = async (writer: BlobWriter, source: LayoutSource, descriptor: Descriptor, opened: Stats, final: string): Promise<boolean> => {
	// Someone else's file, one with another name somewhere, or one others may write: copied instead.
	if (!writer.link || opened.dev !== writer.destDevice || opened.nlink !== 1 || opened.uid !== process.getuid?.() || (opened.mode & 0o022) !== 0) {
		return false;
	}

	try {
		// link(2) does not follow a symlink: if the name was swapped since it was opened, the check below sees it.
		await fs.link(blobPath(source.dir, descriptor.digest), final);
	} catch {
		return false; // EXDEV, EPERM (protected_hardlinks), …: copy instead.
	}

	const linked = await fs.lstat(final);
	if (!linked.isFile() || linked.ino !== opened.ino || linked.dev !== opened.dev) {
		await fs.rm(final, {force: true});
		return false;
	}

	return true;
};

/** Copies (or links) one blob from a part into dest, hashed on the way; a blob already written is skipped. */
const writeBlob = async (writer: BlobWriter, source: LayoutSource, descriptor: Descriptor, role: string): Promise<void> => {
	if (writer.written.has(descriptor.digest)) {
		return;
	}

	writer.signal?.throwIfAborted();
	const final = blobPath(writer.destDir, descriptor.digest);
	const {handle, size} = await openBlob(source, descriptor, role);
	try {
		const stat = await handle.stat();
		if (await tryLink(writer, source, descriptor, stat, final)) {
			const actual = await hashOpened(handle, size, undefined, writer.signal).catch(async (error: unknown) => {
				await fs.rm(final, {force: true});
				throw error;
			});
			if (actual.digest !== descriptor.digest || actual.bytes !== size) {
				await fs.rm(final, {force: true});
				throw mismatch(source, descriptor.digest, role, actual, size);
			}

			writer.linked++;
		} else {
			const partial = path.join(path.dirname(final), `.partial-${crypto.randomBytes(6).toString('hex')}`);
			const sink = await fs.open(partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
			try {
				const actual = await hashOpened(handle, size, sink, writer.signal);
				if (actual.digest !== descriptor.digest || actual.bytes !== size) {
					throw mismatch(source, descriptor.digest, role, actual, size);
				}

				await sink.close();
				await fs.rename(partial, final);
			} catch (error) {
				await sink.close().catch(() => undefined);
				await fs.rm(partial, {force: true});
				// A write to a handle names no file: a full disk then says which folder.
				const errno = error as NodeJS.ErrnoException;
				throw ['ENOSPC', 'EDQUOT'].includes(String(errno.code)) && errno.path === undefined ? Object.assign(errno, {path: partial}) : error;
			}
		}
	} finally {
		await handle.close();
	}

	writer.written.add(descriptor.digest);
};

/** A manifest and every blob it names. */
const writeManifestBlobs = async (writer: BlobWriter, source: LayoutSource, found: {descriptor: Descriptor; manifest: ImageManifest; roles: FoundImage['roles']}): Promise<void> => {
	await writeBlob(writer, source, found.manifest.config, found.roles.config);
	for (const [position, layer] of found.manifest.layers.entries()) {
		await writeBlob(writer, source, layer, found.roles.layer(position));
	}

	await writeBlob(writer, source, found.descriptor, found.roles.manifest);
};

/** The annotations of a platform's descriptor: the part's, then the user's manifest-descriptor ones for it. */
const descriptorAnnotations = (image: FoundImage, requested: readonly RequestedAnnotation[]): Record<string, string> => {
	const annotations = keptAnnotations(image.descriptor.annotations);
	for (const annotation of requested) {
		if (annotation.type === 'manifest-descriptor' && (annotation.platform === undefined || annotation.platform === image.platform)) {
			annotations[annotation.key] = annotation.value;
		}
	}

	return annotations;
};

const annotationsOfType = (requested: readonly RequestedAnnotation[], type: 'index' | 'index-descriptor'): Record<string, string> =>
	Object.fromEntries(requested.filter(annotation => annotation.type === type).map(annotation => [annotation.key, annotation.value]));

/** dest must not exist, or be an empty folder (exobuild's scratch); returns whether it was made here. */
const prepareDest = async (dest: string): Promise<boolean> => {
	try {
		await fs.mkdir(dest);
		return true;
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
			throw error;
		}
	}

	const stat = await fs.lstat(dest);
	if (!stat.isDirectory() || (await fs.readdir(dest)).length > 0) {
		throw new Error(`merge destination ${dest} exists and is not an empty folder`);
	}

	return false;
};

/**
 * Merges `parts` (each one solve's OCI layout; a path is a layout exobuild's engines produced,
 * a LayoutSource names it in messages, e.g. "node z15") into one OCI layout at `dest`.
 */
export const mergeLayouts = async (parts: readonly LayoutRef[], dest: string, options: MergeOptions): Promise<MergedLayout> => {
	const platforms = [...new Set(options.platforms.map(normalisedId))];
	if (parts.length === 0 || platforms.length === 0) {
		throw new Error('mergeLayouts needs at least one part and one platform');
	}

	const requested = parseAnnotations(options.annotations ?? []);
	const sources = parts.map(part => layoutSource(part));
	const contents: PartContent[] = [];
	for (const [position, source] of sources.entries()) {
		options.signal?.throwIfAborted();
		contents.push(await readPart(source, position));
	}

	const images = chooseImages(sources, contents, platforms);
	const chosen = new Set(images.map(image => image.descriptor.digest));
	// An attestation goes with its image (buildx keeps them: util/imagetools/create.go Combine); BuildKit lists them after the images.
	const attestations = [...new Map(images
		.flatMap(image => contents[image.part]!.attestations.filter(attestation => attestation.descriptor.annotations?.[attestationSubjectAnnotation] === image.descriptor.digest))
		.map(attestation => [attestation.descriptor.digest, attestation] as const)).values()];
	const orphan = contents.flatMap(content => content.attestations).find(attestation => !chosen.has(attestation.descriptor.annotations?.[attestationSubjectAnnotation] ?? ''));
	if (orphan !== undefined) {
		throw mergeError(`${sources[orphan.part]!.label}: attestation ${shortDigest(orphan.descriptor.digest)} names no image of the result`, 'export the image again with BuildKit');
	}

	const listed: Descriptor[] = [
		...images.map(image => withAnnotations(image.descriptor, descriptorAnnotations(image, requested))),
		...attestations.map(attestation => attestation.descriptor),
	];
	const indexAnnotations = annotationsOfType(requested, 'index');
	const allDocker = listed.every(descriptor => descriptor.mediaType === mediaTypes.dockerManifest);
	const wantsAnnotations = Object.keys(indexAnnotations).length > 0 || requested.some(annotation => annotation.type === 'manifest-descriptor');
	// As buildx: Docker manifests only make a Docker manifest list, which has no annotations (then an OCI index keeps the user's).
	const index: ImageIndex = {
		schemaVersion: 2,
		mediaType: allDocker && !wantsAnnotations ? mediaTypes.dockerList : mediaTypes.index,
		manifests: listed,
		...(Object.keys(indexAnnotations).length === 0 ? {} : {annotations: indexAnnotations}),
	};

	const made = await prepareDest(dest);
	try {
		await fs.mkdir(path.join(dest, 'blobs', 'sha256'), {recursive: true});
		const writer: BlobWriter = {
			destDir: dest, destDevice: (await fs.stat(path.join(dest, 'blobs', 'sha256'))).dev, link: options.link ?? true, signal: options.signal, written: new Set(), linked: 0,
		};
		for (const found of [...images, ...attestations]) {
			await writeManifestBlobs(writer, sources[found.part]!, found);
		}

		const indexBytes = Buffer.from(JSON.stringify(index));
		const top: Descriptor = {mediaType: index.mediaType!, digest: `sha256:${crypto.createHash('sha256').update(indexBytes).digest('hex')}`, size: indexBytes.length};
		if (!writer.written.has(top.digest)) {
			await fs.writeFile(blobPath(dest, top.digest), indexBytes, {flag: 'wx'});
			writer.written.add(top.digest);
		}

		const topAnnotations = annotationsOfType(requested, 'index-descriptor');
		const entry = withAnnotations(top, topAnnotations);
		await fs.writeFile(path.join(dest, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}\n');
		// index.json last: a layout with one is complete.
		await fs.writeFile(path.join(dest, 'index.json'), `${JSON.stringify({schemaVersion: 2, mediaType: mediaTypes.index, manifests: [entry]})}\n`);
		return {
			dir: dest,
			top: entry,
			images: images.map((image, position) => ({platform: image.platform ?? platforms[0]!, descriptor: listed[position]!, part: image.part})),
			blobs: [...writer.written].sort(),
			linked: writer.linked,
		};
	} catch (error) {
		await (made ? fs.rm(dest, {recursive: true, force: true}) : emptyFolder(dest));
		throw error;
	}
};

const emptyFolder = async (dir: string): Promise<void> => {
	for (const name of await fs.readdir(dir)) {
		await fs.rm(path.join(dir, name), {recursive: true, force: true});
	}
};
