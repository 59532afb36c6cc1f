/**
 * The builder image store: verified OCI image archives in builderImagesDir(), each with a JSON
 * record, named by input hash. Every driver starts its sandboxes from an archive here (the
 * apple-container driver loads it into Apple's image store first). `builder save | load |
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
import {checkCacheFolder, ensureCacheFolder, readCacheRecord, setAside} from '../runs/cache-guard.js';
import {writeCacheJson} from '../runs/cache-write.js';
import {createOwnedDir, reapOwnedDirs} from '../runs/owned-dir.js';
import type {BuilderImage} from './builder-image.js';
import {builderEngines} from './builder-image.js';
import {baseOverridesFromLabel, builderKinds, builderLabels, builderReference, currentRecipeHashes, toolsFromLabels, type BuilderKind} from './identity.js';
import {distroInputHash} from './recipe.js';
import {noTool, planTool, toolRequestsFromEnv, toolRefSchema, type BuilderTools} from './upstream-tools.js';

/**
 * A builder record. It names its archive by its place in the store (`<inputHash>.tar` in
 * builder-images/), never by a path taken on trust: records written before issue 8 carry an
 * absolute `archivePath`, of which only the base name is read, and it must be that name.
 */
const builderImageRecord = z.object({
	archive: z.string().optional(),
	archivePath: z.string().optional(),
	manifestDigest: z.string().regex(/^sha256:[a-f0-9]{64}$/),
	inputHash: z.string().regex(/^[a-f0-9]{64}$/),
	architecture: z.string(),
	// Records written before the containerfile recipe existed are distro images.
	kind: z.enum(builderKinds).default('distro'),
	// Distro builders (records written before they carried tools have none: they are stale).
	recipeHash: z.string().regex(/^[a-f0-9]{64}$/).optional(),
	buildkit: toolRefSchema.optional(),
	binfmt: toolRefSchema.optional(),
	// Containerfile builders made from stand-ins of the pinned bases (`builder build --base-image`).
	baseOverrides: z.record(z.string().regex(/^[a-z][a-z0-9_]*$/), z.string().regex(/^sha256:[a-f0-9]{64}$/)).optional(),
	// Written for people and tools reading the record; derived again from kind and buildkit when read.
	engines: z.array(z.string()).optional(),
}).refine(record => (record.archive ?? path.basename(record.archivePath ?? '')) === `${record.inputHash}.tar`, {
	message: 'its archive is not named <inputHash>.tar in the store',
});

/** The builder always runs natively: it is made for the host's architecture. */
export const builderArchitecture = (): string => hostPlatform()?.architecture ?? process.arch;

const hashPattern = /^[a-f0-9]{64}$/;
const checkedHash = (inputHash: string): string => {
	if (!hashPattern.test(inputHash)) {
		throw new Error(`internal: ${inputHash} is not a builder input hash`);
	}

	return inputHash;
};

export const recordPath = (inputHash: string): string => path.join(builderImagesDir(), `${checkedHash(inputHash)}.json`);
export const archivePathFor = (inputHash: string): string => path.join(builderImagesDir(), `${checkedHash(inputHash)}.tar`);
/** The memo of the archive's last full verification: its digest and the file's identity then. */
const verifiedPath = (inputHash: string): string => path.join(builderImagesDir(), `${checkedHash(inputHash)}.verified`);

export const writeRecord = async (image: BuilderImage): Promise<void> => {
	await writeCacheJson(recordPath(image.inputHash), {
		archive: path.basename(archivePathFor(image.inputHash)), manifestDigest: image.manifestDigest, inputHash: image.inputHash, architecture: image.architecture, kind: image.kind,
		...optionalFields(image), engines: builderEngines(image),
	});
};

/** A builder's recipe hash and tools, where it has them. */
const optionalFields = (image: Pick<BuilderImage, 'recipeHash' | 'buildkit' | 'binfmt' | 'baseOverrides'>): Pick<BuilderImage, 'recipeHash' | 'buildkit' | 'binfmt' | 'baseOverrides'> => ({
	...(image.recipeHash === undefined ? {} : {recipeHash: image.recipeHash}),
	...(image.baseOverrides === undefined ? {} : {baseOverrides: image.baseOverrides}),
	...(image.buildkit === undefined ? {} : {buildkit: image.buildkit}),
	...(image.binfmt === undefined ? {} : {binfmt: image.binfmt}),
});

/** A stored file's identity: a change of content, or a replacement, changes it. */
export const fileIdentity = z.object({dev: z.number(), ino: z.number(), size: z.number(), mtimeMs: z.number(), ctimeMs: z.number()});
export type FileIdentity = z.infer<typeof fileIdentity>;

/** The identity of a regular file (undefined if it is missing or anything else, a symlink included). */
export const regularFileIdentity = async (file: string): Promise<FileIdentity | undefined> => {
	const stat = await fs.lstat(file).catch(() => undefined);
	return stat?.isFile() ? {dev: stat.dev, ino: stat.ino, size: stat.size, mtimeMs: stat.mtimeMs, ctimeMs: stat.ctimeMs} : undefined;
};

export const sameIdentity = (a: FileIdentity, b: FileIdentity): boolean =>
	a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;

/** Every builder image in the store whose archive is still there (a regular file), newest hash order not implied. Corrupt records are set aside. */
export const listBuilderImages = async (): Promise<BuilderImage[]> => {
	if (!(await checkCacheFolder(builderImagesDir()))) {
		return [];
	}

	const names = await fs.readdir(builderImagesDir()).catch(() => [] as string[]);
	const images: BuilderImage[] = [];
	for (const name of names.filter(name => /^[a-f0-9]{64}\.json$/.test(name)).sort()) {
		const file = path.join(builderImagesDir(), name);
		const record = await readCacheRecord(file, builderImageRecord);
		if (record === undefined) {
			continue;
		}

		if (`${record.inputHash}.json` !== name) {
			await setAside(file, 'corrupt', `names input hash ${record.inputHash}, not its own file name`);
			continue;
		}

		const archivePath = archivePathFor(record.inputHash);
		const archive = await fs.lstat(archivePath).catch(() => undefined);
		if (archive !== undefined && !archive.isFile()) {
			await setAside(archivePath, 'unsafe', archive.isSymbolicLink() ? 'is a symlink' : 'is not a regular file');
		}

		if (archive?.isFile()) {
			const {manifestDigest, inputHash, architecture, kind} = record;
			images.push({archivePath, manifestDigest, inputHash, architecture, kind, reference: builderReference(kind, inputHash), ...optionalFields(record)});
		}
	}

	return images;
};

export interface StoredBuilder extends BuilderImage {
	/** Made from this checkout's recipe (a build would use it). */
	readonly current: boolean;
}

/** Made from this checkout's recipe: a containerfile builder by its input hash, a distro builder by its recipe hash (whatever tools it carries). */
const isCurrent = (image: BuilderImage, recipes: Record<BuilderKind, string>): boolean =>
	image.kind === 'containerfile' ? recipes.containerfile === image.inputHash : recipes.distro === image.recipeHash;

export const listWithCurrency = async (suites?: readonly string[]): Promise<StoredBuilder[]> => {
	const recipes = await currentRecipeHashes(suites);
	return (await listBuilderImages()).map(image => ({...image, current: isCurrent(image, recipes)}));
};

/**
 * The builder a build uses: a current containerfile image (it has BuildKit) if one is stored,
 * else a current distro image: the one with exactly `distroInputHash` when that is given (tools
 * were asked for), else one with BuildKit if there is one; `kind` restricts the choice.
 */
export const chooseBuilder = (stored: readonly StoredBuilder[], kind?: BuilderKind, distroInputHash?: string): BuilderImage | undefined => {
	const usable = stored.filter(image => image.current && (kind === undefined || image.kind === kind));
	const distro = usable.filter(image => image.kind === 'distro' && (distroInputHash === undefined || image.inputHash === distroInputHash));
	const chosen = usable.find(image => image.kind === 'containerfile') ?? distro.find(image => image.buildkit !== undefined) ?? distro[0];
	if (chosen === undefined) {
		return undefined;
	}

	const {current: _current, ...image} = chosen;
	return image;
};

/**
 * The input hash of the distro builder the environment asks for (EXOBUILD_BUILDKIT,
 * EXOBUILD_BINFMT and their _SHA256), or undefined when it asks for no tools. A file is hashed;
 * nothing is downloaded.
 */
export const distroInputHashFromEnv = async (suites?: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> => {
	const requests = toolRequestsFromEnv(env);
	if (requests.buildkit === undefined && requests.binfmt === undefined) {
		return undefined;
	}

	const tools: BuilderTools = {};
	for (const [name, request] of Object.entries(requests)) {
		if (request.source.trim() !== noTool) {
			tools[name as keyof BuilderTools] = (await planTool(name as keyof BuilderTools, request)).ref;
		}
	}

	return distroInputHash((await currentRecipeHashes(suites)).distro, tools);
};

export const findBuilderImage = async (options: {suites?: readonly string[]; kind?: BuilderKind; distroInputHash?: string} = {}): Promise<BuilderImage | undefined> =>
	chooseBuilder(await listWithCurrency(options.suites), options.kind, options.distroInputHash ?? await distroInputHashFromEnv(options.suites));

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
		exitCode: 2,
	});
};

export interface VerifiedBuilderArchive {
	readonly manifestDigest: string;
	readonly kind: BuilderKind;
	readonly inputHash: string;
	readonly architecture: string;
	readonly recipeHash?: string;
	readonly buildkit?: BuilderTools['buildkit'];
	readonly binfmt?: BuilderTools['binfmt'];
	readonly baseOverrides?: Readonly<Record<string, string>>;
}

const notABuilder = (file: string, why: string): UserError => new UserError(`${file} is not a usable exobuild builder image: ${why}`, {
	hint: 'make one with `exobuild builder save -o FILE` (or `builder build`) on a machine that has a builder',
	code: 'E_BUILDER_ARCHIVE',
	exitCode: 2,
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

	const recipeHash = labels[builderLabels.recipeHash];
	const tools = toolsFromLabels(labels);
	if (typeof tools === 'string') {
		throw notABuilder(file, tools);
	}

	if (recipeHash !== undefined && (kind.data !== 'distro' || !/^[a-f0-9]{64}$/.test(recipeHash) || distroInputHash(recipeHash, tools) !== inputHash)) {
		throw notABuilder(file, `its ${builderLabels.recipeHash} and tool labels do not give its input hash ${inputHash.slice(0, 12)}`);
	}

	if (recipeHash === undefined && (tools.buildkit !== undefined || tools.binfmt !== undefined)) {
		throw notABuilder(file, `it names upstream tools but no ${builderLabels.recipeHash}`);
	}

	const overridesLabel = labels[builderLabels.baseOverrides];
	const baseOverrides = overridesLabel === undefined ? undefined : baseOverridesFromLabel(overridesLabel);
	if (typeof baseOverrides === 'string') {
		throw notABuilder(file, baseOverrides);
	}

	if (baseOverrides !== undefined && kind.data !== 'containerfile') {
		throw notABuilder(file, `a ${kind.data} builder has no pinned bases to override, yet it carries ${builderLabels.baseOverrides}`);
	}

	return {
		manifestDigest: top.digest, kind: kind.data, inputHash, architecture: config.architecture,
		...optionalFields({...tools, ...(recipeHash === undefined ? {} : {recipeHash}), ...(baseOverrides === undefined ? {} : {baseOverrides})}),
	};
};

/** Runs `verify` with a scratch folder of the store (removed after; a killed run's is reaped). */
const withVerifyScratch = async <T>(verify: (scratch: string) => Promise<T>): Promise<T> => {
	await ensureCacheFolder(builderImagesDir());
	await reapOwnedDirs(builderImagesDir(), name => name.startsWith('.verify-'));
	const scratch = await createOwnedDir(path.join(builderImagesDir(), `.verify-${process.pid}-${Date.now()}`), 'builder-verify');
	try {
		return await verify(scratch.path);
	} finally {
		await scratch.remove();
	}
};

/** Records that the stored archive of `inputHash`, as it is now, was verified to hold `manifestDigest`. */
export const writeVerifiedMemo = async (inputHash: string, manifestDigest: string): Promise<FileIdentity> => {
	const identity = await regularFileIdentity(archivePathFor(inputHash));
	if (identity === undefined) {
		throw new Error(`internal: ${archivePathFor(inputHash)} vanished after it was written`);
	}

	await writeCacheJson(verifiedPath(inputHash), {manifestDigest, archive: identity});
	return identity;
};

/** Verifies `file` and stores a copy (the copy is what is verified); an image already stored under the same hash is replaced. */
export const importBuilderArchive = async (file: string): Promise<StoredBuilder> => {
	await fs.access(file).catch(() => {
		throw new UserError(`${file} does not exist`, {hint: 'give the path of a builder archive made by `exobuild builder save`', code: 'E_BUILDER_ARCHIVE', exitCode: 2});
	});
	const image = await withVerifyScratch(async scratch => {
		// The copy is what is verified, then renamed into place under the name its labels give.
		const copy = path.join(scratch, 'archive.tar');
		await fs.copyFile(file, copy);
		const verified = await verifyBuilderArchive(copy, scratch).catch((error: unknown) => {
			throw error instanceof UserError ? new UserError(error.message.replace(copy, file), {hint: error.hint, code: error.code, exitCode: error.exitCode}) : error;
		});
		const {inputHash, manifestDigest} = verified;
		await fs.chmod(copy, 0o600);
		await fs.rename(copy, archivePathFor(inputHash));
		await writeVerifiedMemo(inputHash, manifestDigest);
		const stored: BuilderImage = {archivePath: archivePathFor(inputHash), ...verified, reference: builderReference(verified.kind, inputHash)};
		await writeRecord(stored);
		return stored;
	});
	return {...image, current: isCurrent(image, await currentRecipeHashes())};
};

const memoRecord = z.object({manifestDigest: z.string(), archive: fileIdentity});

const mismatch = (image: BuilderImage, why: string): UserError => new UserError(`the stored builder archive ${archivePathFor(image.inputHash)} does not match its record: ${why}`, {
	hint: `restore the archive, or remove it (\`exobuild builder rm ${image.reference}\`) and make or load it again (\`exobuild builder build\`, \`exobuild builder load -i FILE\`)`,
	code: 'E_BUILDER_MISMATCH',
	exitCode: 1,
});

/**
 * Checks a stored builder's archive against its record before it is used: cheap when the file
 * is as it was at its last full verification (same device, inode, size, mtime and ctime: the
 * memo `<inputHash>.verified`), else verified in full again (every blob, the manifest digest and
 * labels). A mismatch is refused with the reason. Returns the archive's identity as verified.
 */
export const verifyStoredArchive = async (image: BuilderImage): Promise<FileIdentity> => {
	const archive = archivePathFor(image.inputHash);
	const identity = await regularFileIdentity(archive);
	if (identity === undefined) {
		throw mismatch(image, 'it is missing or not a regular file');
	}

	const memo = await readCacheRecord(verifiedPath(image.inputHash), memoRecord);
	if (memo !== undefined && memo.manifestDigest === image.manifestDigest && sameIdentity(memo.archive, identity)) {
		return identity;
	}

	const verified = await withVerifyScratch(async scratch => verifyBuilderArchive(archive, scratch)).catch((error: unknown) => {
		throw isUserErrorLike(error) ? mismatch(image, error.message.replace(/^.* is not a usable exobuild builder image: /, '')) : error;
	});
	if (verified.manifestDigest !== image.manifestDigest || verified.inputHash !== image.inputHash) {
		throw mismatch(image, `it holds ${verified.manifestDigest} (inputs ${verified.inputHash.slice(0, 12)}), its record says ${image.manifestDigest} (inputs ${image.inputHash.slice(0, 12)})`);
	}

	const after = await regularFileIdentity(archive);
	if (after === undefined || !sameIdentity(after, identity)) {
		throw mismatch(image, 'it changed while it was being verified');
	}

	await writeCacheJson(verifiedPath(image.inputHash), {manifestDigest: image.manifestDigest, archive: identity});
	return identity;
};

/** Refuses the archive if it changed since it was verified as `identity` (e.g. while it was unpacked). */
export const assertArchiveUnchanged = async (image: BuilderImage, identity: FileIdentity): Promise<void> => {
	const now = await regularFileIdentity(archivePathFor(image.inputHash));
	if (now === undefined || !sameIdentity(now, identity)) {
		throw mismatch(image, 'it changed while it was being used');
	}
};

const isUserErrorLike = (error: unknown): error is UserError => error instanceof UserError;

/**
 * Writes a stored image's archive, checked against its record, to `dest` as every file output is
 * written (src/outputs/destination.ts): a file is replaced only by a complete copy, a symlink
 * followed, a device or FIFO written through.
 */
export const exportBuilderImage = async (image: BuilderImage, dest: string): Promise<void> => {
	await verifyStoredArchive(image);
	await writeFileDestination(dest, async out => pipeline(createReadStream(archivePathFor(image.inputHash)), out, {end: false}));
};

/** Removes a stored image: its record, archive and memo, by their places in the store (a symlink is removed as itself). */
export const removeBuilderImage = async (image: BuilderImage): Promise<void> => {
	await fs.rm(recordPath(image.inputHash), {force: true});
	await fs.rm(archivePathFor(image.inputHash), {force: true});
	await fs.rm(verifiedPath(image.inputHash), {force: true});
};
