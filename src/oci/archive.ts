/**
 * OCI image archives (a tar of an OCI image layout): writing exobuild's output atomically, and
 * reading one back (tests, the demo).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {Readable, type Writable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import * as tar from 'tar';
import {UserError} from '../errors.js';
import {partialPathOf, trackPartial} from '../runs/partials.js';
import {blobName, shortDigest, verifyBlob, type LayoutRef} from './blobs.js';
import {countListed, manifestRoles, readIndexJson, readManifest, readNestedIndex, startWalk} from './layout.js';
import {
	configSchema, containerdNameAnnotation, indexSchema, isAttestationManifest, isIndexMediaType, manifestSchema, refNameAnnotation,
	type Descriptor, type ImageConfig, type ImageIndex,
} from './schema.js';

/** docker.io/library/name:latest style of a reference, as containerd records it. */
export const normaliseReference = (reference: string): string => {
	const firstSlash = reference.indexOf('/');
	const first = firstSlash === -1 ? '' : reference.slice(0, firstSlash);
	let full = reference;
	if (firstSlash === -1) {
		full = `docker.io/library/${reference}`;
	} else if (!first.includes('.') && !first.includes(':') && first !== 'localhost') {
		full = `docker.io/${reference}`;
	}

	const lastSegment = full.slice(full.lastIndexOf('/') + 1);
	return lastSegment.includes(':') || lastSegment.includes('@') ? full : `${full}:latest`;
};

const tagOf = (reference: string): string => {
	const lastSegment = reference.slice(reference.lastIndexOf('/') + 1);
	const colon = lastSegment.indexOf(':');
	return colon === -1 ? 'latest' : lastSegment.slice(colon + 1).split('@')[0]!;
};

/**
 * Checks every blob reachable from index.json: a regular file inside the layout with its
 * descriptor's size and digest (indexes and manifests read under the JSON cap, every other blob
 * streamed through a hash), with nesting and fan-out capped; returns the digests.
 */
export const verifyLayout = async (layout: LayoutRef): Promise<Set<string>> => {
	const {walk, index} = await startWalk(layout);
	const seen = new Set<string>();
	const visit = async (descriptor: Descriptor, depth: number, listedIn: string): Promise<void> => {
		if (seen.has(descriptor.digest)) {
			return;
		}

		if (isIndexMediaType(descriptor.mediaType)) {
			const nested = await readNestedIndex(walk, descriptor, depth, listedIn);
			seen.add(descriptor.digest);
			for (const child of nested.manifests) {
				await visit(child, depth + 1, `index ${shortDigest(descriptor.digest)}`);
			}
		} else if (descriptor.mediaType.includes('manifest')) {
			const roles = manifestRoles(descriptor, listedIn);
			const manifest = await readManifest(walk.source, descriptor, roles.manifest);
			seen.add(descriptor.digest);
			countListed(walk, 1 + manifest.layers.length, blobName(descriptor.digest, roles.manifest));
			// A config or layer is a plain blob whatever its media type says: no walk goes on from it.
			const blobs = [{blob: manifest.config, role: roles.config}, ...manifest.layers.map((layer, position) => ({blob: layer, role: roles.layer(position)}))];
			for (const {blob, role} of blobs.filter(({blob}) => !seen.has(blob.digest))) {
				await verifyBlob(walk.source, blob, role);
				seen.add(blob.digest);
			}
		} else {
			await verifyBlob(walk.source, descriptor, `listed in ${listedIn}`);
			seen.add(descriptor.digest);
		}
	};

	for (const descriptor of index.manifests) {
		await visit(descriptor, 1, 'index.json');
	}

	return seen;
};

/**
 * Writes `file` through a partial sibling (tracked: a signal removes it, the next run reaps it
 * after a SIGKILL), fsync'd and renamed over `file`: readers see the old file or the complete new
 * one. For exobuild's own files (the cache): whatever is at `file`, a symlink too, is replaced,
 * never followed. A user's output goes through src/outputs/destination.ts instead.
 */
export const writeFileAtomically = async (file: string, write: (partial: string) => Promise<void>): Promise<void> => {
	const tracked = await trackPartial(partialPathOf(file));
	const partial = tracked.path;
	try {
		await write(partial);
		const handle = await fs.open(partial, 'r');
		try {
			await handle.sync();
		} finally {
			await handle.close();
		}

		await fs.rename(partial, file);
		await tracked.release();
	} catch (error) {
		await tracked.discard();
		if (['ENOSPC', 'EDQUOT'].includes(String((error as NodeJS.ErrnoException).code))) {
			throw new UserError(`no space left in ${path.dirname(path.resolve(file))} (${(error as NodeJS.ErrnoException).code})`, {
				hint: 'free some space there; the previous file was kept', code: 'E_NO_SPACE', exitCode: 1, cause: error,
			});
		}

		throw error;
	}
};

/**
 * index.json naming the layout's one top descriptor once per tag (org.opencontainers.image.ref.name
 * = the tag, io.containerd.image.name = the full reference), other annotations kept.
 */
export const taggedIndex = (index: ImageIndex, layoutDir: string, tags: readonly string[]): ImageIndex => {
	// One image, possibly listed once per tag already by an earlier tagging.
	if (new Set(index.manifests.map(descriptor => descriptor.digest)).size !== 1) {
		throw new Error(`expected one image in ${layoutDir}/index.json, found ${index.manifests.length}`);
	}

	const {annotations, ...top} = index.manifests[0]!;
	const kept = Object.fromEntries(Object.entries(annotations ?? {}).filter(([key]) => key !== refNameAnnotation && key !== containerdNameAnnotation));
	const manifests = tags.length === 0
		? [{...top, ...(Object.keys(kept).length > 0 ? {annotations: kept} : {})}]
		: tags.map(tag => ({...top, annotations: {...kept, [containerdNameAnnotation]: normaliseReference(tag), [refNameAnnotation]: tagOf(tag)}}));
	return {schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests};
};

/**
 * Runs `pack` with the archive's file list while the layout's index.json names each tag
 * (org.opencontainers.image.ref.name = the tag, io.containerd.image.name = the full reference,
 * as BuildKit's OCI exporter does). Every blob is verified first. The layout's own index.json is
 * put back afterwards, so the layout can be packed again (e.g. once for --output, once for --load).
 */
const withArchiveFiles = async (layoutDir: string, tags: readonly string[], pack: (files: string[]) => Promise<void>): Promise<void> => {
	const newIndex = taggedIndex(await readIndexJson(layoutDir), layoutDir, tags);
	const digests = await verifyLayout(layoutDir);
	const indexFile = path.join(layoutDir, 'index.json');
	const original = await fs.readFile(indexFile);
	await fs.writeFile(indexFile, `${JSON.stringify(newIndex)}\n`);
	try {
		await pack(['oci-layout', 'index.json', ...[...digests].sort().map(digest => path.posix.join('blobs', ...digest.split(':')))]);
	} finally {
		await fs.writeFile(indexFile, original);
	}
};

const archiveOptions = (layoutDir: string) => ({cwd: layoutDir, portable: true, noDirRecurse: true, mtime: new Date(0)});

/** Packs an OCI layout (one image or one index in index.json) into an archive file at `dest` (exobuild's own files; see writeFileAtomically). */
export const packLayoutToArchive = async (layoutDir: string, dest: string, options: {tags: readonly string[]}): Promise<void> => {
	await withArchiveFiles(layoutDir, options.tags, async files => writeFileAtomically(dest, async partial => {
		await tar.c({...archiveOptions(layoutDir), file: partial}, files);
	}));
};

/** Packs an OCI layout into `out` (not ended): the same archive packLayoutToArchive writes, for a user's output. */
export const packLayoutToStream = async (layoutDir: string, out: Writable, options: {tags: readonly string[]}): Promise<void> => {
	await withArchiveFiles(layoutDir, options.tags, async files => {
		await pipeline(Readable.from(tar.c(archiveOptions(layoutDir), files) as unknown as AsyncIterable<Buffer>), out, {end: false});
	});
};

export interface InspectedImage {
	readonly platform: string;
	readonly manifestDigest: string;
	readonly config: ImageConfig;
	/** A file of the image's merged filesystem (layers applied in order, whiteouts honoured); undefined if absent. */
	readFile(file: string): Promise<Buffer | undefined>;
}

export interface InspectedArchive {
	readonly kind: 'manifest' | 'index';
	readonly topDigest: string;
	/** io.containerd.image.name of each index.json entry (the full references). */
	readonly tags: string[];
	readonly images: InspectedImage[];
}

const readArchiveEntries = async (file: string): Promise<Map<string, Buffer>> => {
	const entries = new Map<string, Buffer>();
	await tar.t({
		file,
		onReadEntry(entry) {
			const chunks: Buffer[] = [];
			entry.on('data', (chunk: Buffer) => chunks.push(chunk));
			entry.on('end', () => entries.set(entry.path.replace(/^\.\//, ''), Buffer.concat(chunks)));
		},
	});
	return entries;
};

/** Looks a path up in one layer: its content, a whiteout of it (or of an ancestor), or nothing. */
const lookInLayer = async (layer: Buffer, wanted: string): Promise<{found: Buffer} | {deleted: true} | undefined> => {
	const parts = wanted.split('/');
	const whiteouts = new Set<string>();
	for (let depth = 1; depth <= parts.length; depth++) {
		const dir = parts.slice(0, depth - 1).join('/');
		whiteouts.add(`${dir ? `${dir}/` : ''}.wh.${parts[depth - 1]}`);
		if (depth < parts.length) {
			whiteouts.add(`${parts.slice(0, depth).join('/')}/.wh..wh..opq`);
		}
	}

	let result: {found: Buffer} | {deleted: true} | undefined;
	await new Promise<void>((resolve, reject) => {
		const parser = new tar.Parser({
			onReadEntry(entry) {
				const name = entry.path.replace(/^\.?\//, '').replace(/\/$/, '');
				if (name === wanted && entry.type === 'File') {
					const chunks: Buffer[] = [];
					entry.on('data', (chunk: Buffer) => chunks.push(chunk));
					entry.on('end', () => {
						result = {found: Buffer.concat(chunks)};
					});
					return;
				}

				if (whiteouts.has(name) && result === undefined) {
					result = {deleted: true};
				}

				entry.resume();
			},
		});
		parser.on('end', resolve);
		parser.on('error', reject);
		Readable.from([layer]).pipe(parser);
	});
	return result;
};

export const inspectArchive = async (file: string): Promise<InspectedArchive> => {
	const entries = await readArchiveEntries(file);
	const blob = (digest: string): Buffer => {
		const data = entries.get(path.posix.join('blobs', ...digest.split(':')));
		if (data === undefined) {
			throw new Error(`${file}: blob ${digest} is missing`);
		}

		return data;
	};

	const index = indexSchema.parse(JSON.parse(entries.get('index.json')?.toString('utf8') ?? 'null'));
	const top = index.manifests[0];
	if (top === undefined) {
		throw new Error(`${file}: index.json lists no image`);
	}

	const descriptors: Array<{descriptor: Descriptor}> = [];
	const collect = (descriptor: Descriptor): void => {
		if (isIndexMediaType(descriptor.mediaType)) {
			for (const child of indexSchema.parse(JSON.parse(blob(descriptor.digest).toString('utf8'))).manifests) {
				collect(child);
			}
		} else if (descriptor.mediaType.includes('manifest') && !isAttestationManifest(descriptor)) {
			descriptors.push({descriptor});
		}
	};

	collect(top);
	const images = descriptors.map(({descriptor}): InspectedImage => {
		const manifest = manifestSchema.parse(JSON.parse(blob(descriptor.digest).toString('utf8')));
		const config = configSchema.parse(JSON.parse(blob(manifest.config.digest).toString('utf8')));
		return {
			platform: [config.os, config.architecture, config.variant].filter(Boolean).join('/'),
			manifestDigest: descriptor.digest,
			config,
			async readFile(wanted: string) {
				const normalised = wanted.replace(/^\/+/, '');
				for (const layer of [...manifest.layers].reverse()) {
					const hit = await lookInLayer(blob(layer.digest), normalised);
					if (hit !== undefined) {
						return 'found' in hit ? hit.found : undefined;
					}
				}

				return undefined;
			},
		};
	});
	return {
		kind: isIndexMediaType(top.mediaType) ? 'index' : 'manifest',
		topDigest: top.digest,
		tags: index.manifests.map(descriptor => descriptor.annotations?.[containerdNameAnnotation]).filter((name): name is string => name !== undefined),
		images,
	};
};

