/**
 * The builder image store: verified OCI image archives in builderImagesDir(), each with a JSON
 * record, named by input hash. Every runtime starts its sandboxes from an archive here (the
 * apple-container runtime loads it into Apple's image store first). `builder save | load |
 * fetch | ls | rm` work on this store, so a builder reaches an air-gapped machine as one file.
 */
import {createReadStream} from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import {pipeline} from 'node:stream/promises';
import * as tar from 'tar';
import {z} from 'zod';
import {UserError} from '../errors.js';
import {readConfig, readIndexJson, readManifest, userLayout, verifyLayout, writeFileAtomically} from '../oci/index.js';
import {isIndexMediaType} from '../oci/schema.js';
import {writeFileDestination} from '../outputs/destination.js';
import {builderImagesDir} from '../paths.js';
import {hostPlatform} from '../platforms/parse.js';
import {createOwnedDir, reapOwnedDirs} from '../runs/owned-dir.js';
import type {BuilderImage} from './builder-image.js';
import {builderKinds, builderLabels, builderReference, currentInputHashes, type BuilderKind} from './identity.js';

const builderImageRecord = z.object({
	archivePath: z.string(),
	manifestDigest: z.string().regex(/^sha256:[a-f0-9]{64}$/),
	inputHash: z.string().regex(/^[a-f0-9]{64}$/),
	architecture: z.string(),
	// Records written before the containerfile recipe existed are distro images.
	kind: z.enum(builderKinds).default('distro'),
	reference: z.string().optional(),
});

/** The builder always runs natively: it is made for the host's architecture. */
export const builderArchitecture = (): string => hostPlatform()?.architecture ?? process.arch;

export const recordPath = (inputHash: string): string => path.join(builderImagesDir(), `${inputHash}.json`);
export const archivePathFor = (inputHash: string): string => path.join(builderImagesDir(), `${inputHash}.tar`);

export const writeRecord = async (image: BuilderImage): Promise<void> => {
	await writeFileAtomically(recordPath(image.inputHash), async partial => fs.writeFile(partial, `${JSON.stringify(image, undefined, 2)}\n`));
};

/** Every builder image in the store whose archive is still there, newest hash order not implied. */
export const listBuilderImages = async (): Promise<BuilderImage[]> => {
	const names = await fs.readdir(builderImagesDir()).catch(() => [] as string[]);
	const images: BuilderImage[] = [];
	for (const name of names.filter(name => /^[a-f0-9]{64}\.json$/.test(name)).sort()) {
		try {
			// eslint-disable-next-line no-await-in-loop
			const record = builderImageRecord.parse(JSON.parse(await fs.readFile(path.join(builderImagesDir(), name), 'utf8')));
			// eslint-disable-next-line no-await-in-loop
			await fs.access(record.archivePath);
			images.push({...record, reference: record.reference ?? builderReference(record.kind, record.inputHash)});
		} catch {}
	}

	return images;
};

export interface StoredBuilder extends BuilderImage {
	/** Made from this checkout's recipe (a build would use it). */
	readonly current: boolean;
}

export const listWithCurrency = async (suites?: readonly string[]): Promise<StoredBuilder[]> => {
	const current = await currentInputHashes(suites);
	return (await listBuilderImages()).map(image => ({...image, current: current[image.kind] === image.inputHash}));
};

/**
 * The builder a build uses: a current containerfile image (it has BuildKit) if one is stored,
 * else a current distro image; `kind` restricts the choice.
 */
export const chooseBuilder = (stored: readonly StoredBuilder[], kind?: BuilderKind): BuilderImage | undefined => {
	const usable = stored.filter(image => image.current && (kind === undefined || image.kind === kind));
	const chosen = usable.find(image => image.kind === 'containerfile') ?? usable[0];
	if (chosen === undefined) {
		return undefined;
	}

	const {current: _current, ...image} = chosen;
	return image;
};

export const findBuilderImage = async (options: {suites?: readonly string[]; kind?: BuilderKind} = {}): Promise<BuilderImage | undefined> =>
	chooseBuilder(await listWithCurrency(options.suites), options.kind);

/** Finds a stored image by reference (exobuild-builder:KIND-HASH12), hash prefix, or kind. */
export const resolveStoredBuilder = async (selector: string): Promise<StoredBuilder> => {
	const stored = await listWithCurrency();
	const bare = selector.replace(/^(docker\.io\/)?(library\/)?/, '');
	const matches = stored.filter(image => image.reference === bare || image.inputHash.startsWith(selector) || (image.kind === selector && image.current));
	if (matches.length === 1) {
		return matches[0]!;
	}

	const known = stored.map(image => image.reference).join(', ') || 'none';
	throw new UserError(matches.length === 0 ? `no builder image matches "${selector}"` : `"${selector}" matches ${matches.length} builder images`, {
		hint: `stored builder images: ${known} (see \`exobuild builder ls\`)`,
		code: 'E_BUILDER_IMAGE',
	});
};

export interface VerifiedBuilderArchive {
	readonly manifestDigest: string;
	readonly kind: BuilderKind;
	readonly inputHash: string;
	readonly architecture: string;
}

const notABuilder = (file: string, why: string): UserError => new UserError(`${file} is not a usable exobuild builder image: ${why}`, {
	hint: 'make one with `exobuild builder save -o FILE` (or `builder build`) on a machine that has a builder',
	code: 'E_BUILDER_ARCHIVE',
});

/**
 * Verifies an OCI image archive holds one exobuild builder image for this machine: every blob
 * present and matching its digest, labels naming its kind and input hash, the host's architecture.
 */
export const verifyBuilderArchive = async (file: string, scratch: string): Promise<VerifiedBuilderArchive> => {
	const layout = path.join(scratch, 'layout');
	await fs.mkdir(layout, {recursive: true});
	try {
		await tar.x({file, cwd: layout, strict: true});
	} catch (error) {
		throw notABuilder(file, `it is not a readable tar archive (${(error as Error).message})`);
	}

	const source = userLayout(layout, 'its layout');
	let index;
	try {
		index = await readIndexJson(source);
		await verifyLayout(source);
	} catch (error) {
		throw notABuilder(file, `its OCI layout does not verify (${(error as Error).message.split('\n')[0]})`);
	}

	const [top, ...more] = index.manifests;
	if (top === undefined || more.length > 0 || isIndexMediaType(top.mediaType)) {
		throw notABuilder(file, `it must hold exactly one image manifest (index.json lists ${index.manifests.length} entries${top !== undefined && isIndexMediaType(top.mediaType) ? ', an index' : ''})`);
	}

	const manifest = await readManifest(source, top).catch((error: unknown) => {
		throw notABuilder(file, (error as Error).message.split('\n')[0]!);
	});
	const config = await readConfig(source, manifest.config).catch((error: unknown) => {
		throw notABuilder(file, (error as Error).message.split('\n')[0]!);
	});
	const labels = config.config?.Labels ?? {};
	const kind = z.enum(builderKinds).safeParse(labels[builderLabels.kind] ?? 'distro');
	const inputHash = labels[builderLabels.inputHash];
	if (!kind.success || inputHash === undefined || !/^[a-f0-9]{64}$/.test(inputHash)) {
		throw notABuilder(file, `its image has no valid ${builderLabels.kind}/${builderLabels.inputHash} labels`);
	}

	if (config.architecture !== builderArchitecture()) {
		throw notABuilder(file, `it is for ${config.architecture}, and this machine runs ${builderArchitecture()} (the builder always runs natively)`);
	}

	return {manifestDigest: top.digest, kind: kind.data, inputHash, architecture: config.architecture};
};

/** Verifies `file` and stores a copy; an image already stored under the same hash is replaced. */
export const importBuilderArchive = async (file: string): Promise<StoredBuilder> => {
	await fs.access(file).catch(() => {
		throw new UserError(`${file} does not exist`, {hint: 'give the path of a builder archive made by `exobuild builder save`', code: 'E_BUILDER_ARCHIVE'});
	});
	await fs.mkdir(builderImagesDir(), {recursive: true});
	await reapOwnedDirs(builderImagesDir(), name => name.startsWith('.verify-'));
	const scratch = await createOwnedDir(path.join(builderImagesDir(), `.verify-${process.pid}-${Date.now()}`), 'builder-verify');
	try {
		const verified = await verifyBuilderArchive(file, scratch.path);
		const archivePath = archivePathFor(verified.inputHash);
		await writeFileAtomically(archivePath, async partial => fs.copyFile(file, partial));
		const image: BuilderImage = {archivePath, ...verified, reference: builderReference(verified.kind, verified.inputHash)};
		await writeRecord(image);
		const current = (await currentInputHashes())[image.kind] === image.inputHash;
		return {...image, current};
	} finally {
		await scratch.remove();
	}
};

/**
 * Writes a stored image's archive to `dest` as every file output is written
 * (src/outputs/destination.ts): a file is replaced only by a complete copy, a symlink followed, a
 * device or FIFO written through.
 */
export const exportBuilderImage = async (image: BuilderImage, dest: string): Promise<void> => {
	await writeFileDestination(dest, async out => pipeline(createReadStream(image.archivePath), out, {end: false}));
};

export const removeBuilderImage = async (image: BuilderImage): Promise<void> => {
	await fs.rm(recordPath(image.inputHash), {force: true});
	await fs.rm(image.archivePath, {force: true});
};
