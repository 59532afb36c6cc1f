/**
 * Making, finding and caching the distro builder image: an OCI image archive in
 * builderImagesDir(), named by the hash of its inputs. Layer 1 (the Debian root filesystem,
 * slow to make) is cached on its own, so a changed agent only rebuilds layer 2 (seconds).
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import {execa} from 'execa';
import * as tar from 'tar';
import {z} from 'zod';
import {UserError} from '../errors.js';
import {LayoutWriter, normaliseReference} from '../oci/index.js';
import {containerdNameAnnotation} from '../oci/schema.js';
import {builderImagesDir, vmImageDir} from '../paths.js';
import {ensureCacheFolder, readCacheRecord} from '../runs/cache-guard.js';
import {writeCacheJson} from '../runs/cache-write.js';
import {withLock} from '../runs/lock.js';
import {createOwnedDir, reapOwnedDirs} from '../runs/owned-dir.js';
import {sandboxIdMap} from '../sandboxes/linux-userns/id-map.js';
import type {SandboxDriver} from '../sandboxes/driver.js';
import type {BuilderImage} from './builder-image.js';
import {buildContainerfileBuilder} from './containerfile.js';
import {builderLabels, builderReference} from './identity.js';
import {archivePathFor, builderArchitecture, findBuilderImage, verifyStoredArchive, writeRecord, writeVerifiedMemo} from './store.js';
import {agentLayerContent, agentLayerFiles, archPairs, builderPackages, defaultMirror, defaultSuites, distroInputHash, recipeHashes, rootfsRecipe} from './recipe.js';
import {toolLabels} from './identity.js';
import {
	defaultBuildkit, extractTool, noDefaultBuildkitReason, noTool, obtainTool, planTool, toolNames, toolRequestsFromEnv, toolSpecs,
	type BuilderTools, type PlannedTool, type ToolName, type ToolRequest,
} from './upstream-tools.js';
import {buildkitVersion} from './upstream-pins.js';

export {builderEngines, type BuilderEngine, type BuilderImage} from './builder-image.js';
export {buildkitPin, buildkitPins, buildkitVersion} from './upstream-pins.js';
export {toolNames, toolSpecs, type BuilderTools, type ToolName, type ToolRef, type ToolRequest} from './upstream-tools.js';
export {buildContainerfileBuilder} from './containerfile.js';
export {builderKinds, builderReference, containerfilePath, currentInputHashes, currentRecipeHashes, type BuilderKind} from './identity.js';
export {
	builderArchitecture, distroInputHashFromEnv, exportBuilderImage, findBuilderImage, importBuilderArchive, listWithCurrency, removeBuilderImage, resolveStoredBuilder, verifyStoredArchive, type StoredBuilder,
} from './store.js';

export interface BuilderOptions {
	readonly mirror?: string;
	readonly suites?: readonly string[];
	readonly force?: boolean;
	readonly onProgress?: (step: string, detail?: string) => void;
	readonly signal?: AbortSignal;
	/**
	 * Upstream tools for a distro builder (--buildkit, --binfmt). Default: what the environment
	 * names (EXOBUILD_BUILDKIT, EXOBUILD_BINFMT), else the pinned official BuildKit release for
	 * this machine (downloaded; if that is not possible the builder has buildah only) and no binfmt.
	 */
	readonly tools?: Partial<Record<ToolName, ToolRequest>>;
	/** One-line notices (what the builder lacks and why); default: a line on stderr. */
	readonly onNotice?: (line: string) => void;
}

const layerRecord = z.object({digest: z.string().regex(/^sha256:[a-f0-9]{64}$/), diffId: z.string(), size: z.number()});

/** The sha256 digest of a regular file (undefined if it is anything else), read without following a symlink. */
const fileDigest = async (file: string): Promise<string | undefined> => {
	const handle = await fs.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW).catch(() => undefined);
	if (handle === undefined) {
		return undefined;
	}

	try {
		if (!(await handle.stat()).isFile()) {
			return undefined;
		}

		const hash = crypto.createHash('sha256');
		for await (const chunk of handle.createReadStream({autoClose: false})) {
			hash.update(chunk as Buffer);
		}

		return `sha256:${hash.digest('hex')}`;
	} finally {
		await handle.close();
	}
};

const makeRootfsLayer = async (rootfsHash: string, work: string, options: BuilderOptions): Promise<z.infer<typeof layerRecord>> => {
	const layersDir = await ensureCacheFolder(path.join(builderImagesDir(), 'layers'));
	const blob = path.join(layersDir, `${rootfsHash}.tar.gz`);
	const record = path.join(layersDir, `${rootfsHash}.json`);
	// The cached layer is used only if the blob is what its record says (records are not trusted).
	const cached = await readCacheRecord(record, layerRecord);
	if (cached !== undefined && await fileDigest(blob) === cached.digest) {
		return cached;
	}

	if (process.platform === 'linux' && process.getuid?.() !== 0) {
		// As a normal user mmdebstrap runs in unshare mode, which needs the subordinate ids the sandbox needs too.
		await sandboxIdMap();
	}

	const mirror = options.mirror ?? defaultMirror;
	const suites = options.suites ?? defaultSuites;
	options.onProgress?.('Debian packages', `mmdebstrap ${builderPackages.join(' ')} from ${mirror}`);
	const rootfsTar = path.join(work, 'rootfs.tar');
	const child = execa(rootfsRecipe, [rootfsTar, mirror, suites.join(' '), builderPackages.join(' '), archPairs().join(' ')], {
		reject: false, all: true, buffer: {all: true, stdout: false, stderr: false}, ...(options.signal === undefined ? {} : {cancelSignal: options.signal}),
	});
	const tail: string[] = [];
	if (child.all) {
		readline.createInterface({input: child.all}).on('line', line => {
			tail.push(line);
			if (tail.length > 20) {
				tail.shift();
			}

			if (/^[IWE]: /.test(line)) {
				options.onProgress?.('Debian packages', line.slice(3));
			}
		});
	}

	const result = await child;
	if (result.exitCode !== 0) {
		throw new UserError(`making the builder image's root filesystem failed (mmdebstrap exit code ${result.exitCode ?? result.signal})`, {
			hint: `check that ${mirror} serves ${suites.join(' or ')}; last output: ${tail.slice(-3).join(' | ')}`,
			exitCode: 1,
			code: 'E_BUILDER_IMAGE',
		});
	}

	options.onProgress?.('Compress root filesystem');
	const writer = new LayoutWriter(path.join(work, 'layer1'));
	const {descriptor, diffId} = await writer.addLayer(rootfsTar);
	await fs.rename(path.join(work, 'layer1', 'blobs', 'sha256', descriptor.digest.slice(7)), blob);
	const value = {digest: descriptor.digest, diffId, size: descriptor.size};
	await writeCacheJson(record, value);
	await fs.rm(rootfsTar, {force: true});
	return value;
};

/** Layer 2: the agent, and the upstream tools' files (already in `tree`, at their targets). */
const makeAgentLayer = async (work: string, tree: string, toolFiles: readonly string[]): Promise<string> => {
	for (const [source, target, mode] of agentLayerFiles) {
		const destination = path.join(tree, target);
		await fs.mkdir(path.dirname(destination), {recursive: true});
		await fs.writeFile(destination, await agentLayerContent(source));
		await fs.chmod(destination, mode);
	}

	const layer = path.join(work, 'agent-layer.tar');
	await tar.c({cwd: tree, file: layer, portable: true, mtime: new Date(0)}, [...agentLayerFiles.map(([, target]) => target), ...toolFiles]);
	return layer;
};

const notice = (options: BuilderOptions, line: string): void => {
	if (options.onNotice === undefined) {
		process.stderr.write(`exobuild: ${line}\n`);
	} else {
		options.onNotice(line);
	}
};

/** The tools asked for (options, else the environment), planned: nothing downloaded yet. */
const planTools = async (options: BuilderOptions): Promise<{planned: PlannedTool[]; notes: string[]}> => {
	const requests = options.tools ?? toolRequestsFromEnv();
	const planned: PlannedTool[] = [];
	const notes: string[] = [];
	for (const name of toolNames) {
		const request = requests[name];
		if (request?.source.trim() === noTool) {
			continue;
		}

		if (request !== undefined) {
			planned.push(await planTool(name, request));
		} else if (name === 'buildkit') {
			const pinned = defaultBuildkit(builderArchitecture());
			if (pinned === undefined) {
				notes.push(`${noDefaultBuildkitReason(builderArchitecture())}: the builder gets buildah only (add BuildKit with --buildkit FILE|URL --buildkit-sha256 HEX)`);
			} else {
				planned.push(pinned);
			}
		} else {
			notes.push('no tonistiigi/binfmt tarball given (--binfmt FILE|URL): the agent registers the QEMU handlers itself');
		}
	}

	return {planned, notes};
};

const refsOf = (planned: readonly PlannedTool[]): BuilderTools => Object.fromEntries(planned.map(tool => [tool.name, tool.ref]));

/**
 * The local tarball of each planned tool (downloading URLs into the cache). The pinned official
 * BuildKit, chosen because none was given, is left out when it cannot be downloaded, with a note.
 */
const obtainTools = async (planned: readonly PlannedTool[], options: BuilderOptions): Promise<{obtained: Array<[PlannedTool, string]>; notes: string[]}> => {
	const downloads = path.join(builderImagesDir(), 'downloads');
	const obtained: Array<[PlannedTool, string]> = [];
	const notes: string[] = [];
	for (const tool of planned) {
		try {
			obtained.push([tool, await obtainTool(tool, downloads, {
				...(options.signal === undefined ? {} : {signal: options.signal}),
				// The default download is tried briefly: offline, the builder is made without it.
				...(tool.byDefault ? {retries: 1} : {}),
				...(options.onProgress === undefined ? {} : {onProgress: options.onProgress}),
			})]);
		} catch (error) {
			if (!(tool.byDefault && error instanceof UserError && error.code === 'E_DOWNLOAD') || options.signal?.aborted) {
				throw error;
			}

			notes.push(`BuildKit ${buildkitVersion} could not be downloaded (${error.message}): the builder gets buildah only (add BuildKit with --buildkit FILE|URL, e.g. a copy of the release tarball)`);
		}
	}

	return {obtained, notes};
};

/**
 * Makes the distro builder image (unless the one asked for is stored and `force` is not set):
 * layer 1 from Debian packages (cached by its recipe hash), layer 2 the agent plus the
 * upstream tools (BuildKit, binfmt) asked for; their tarballs' SHA-256 are part of its input hash.
 */
export const createBuilderImage = async (options: BuilderOptions = {}): Promise<BuilderImage> => {
	const {rootfsHash, recipeHash} = await recipeHashes(options.suites);
	await ensureCacheFolder(builderImagesDir());
	await reapOwnedDirs(builderImagesDir(), name => name.startsWith('.work-'));
	const {planned, notes} = await planTools(options);
	const stored = async (hash: string): Promise<BuilderImage | undefined> => (options.force ? undefined : findBuilderImage({...options, kind: 'distro', distroInputHash: hash}));
	// What was asked for may be stored already: then nothing is downloaded.
	const asked = await stored(distroInputHash(recipeHash, refsOf(planned)));
	if (asked !== undefined) {
		return asked;
	}

	const {obtained, notes: downloadNotes} = await obtainTools(planned, options);
	for (const line of [...notes, ...downloadNotes]) {
		notice(options, line);
	}

	const tools = refsOf(obtained.map(([tool]) => tool));
	const inputHash = distroInputHash(recipeHash, tools);
	return withLock(path.join(builderImagesDir(), `.lock-${inputHash}`), () => options.onProgress?.('Waiting for another exobuild making the same builder image'), async () => {
		const existing = await stored(inputHash);
		if (existing !== undefined) {
			return existing;
		}

		if (options.force) {
			await fs.rm(path.join(builderImagesDir(), 'layers', `${rootfsHash}.json`), {force: true});
		}

		const work = await createOwnedDir(path.join(builderImagesDir(), `.work-${process.pid}-${Date.now()}`), 'builder-work');
		try {
			const tree = path.join(work.path, 'agent-layer');
			const toolFiles: string[] = [];
			for (const [tool, tarball] of obtained) {
				options.onProgress?.(`Take ${toolSpecs[tool.name].what} ${tool.ref.version}`, tool.location.kind === 'file' ? tool.location.path : tool.location.url);
				const written = await extractTool(tool, tarball, tree, work.path, {architecture: builderArchitecture(), ...(options.signal === undefined ? {} : {signal: options.signal})});
				toolFiles.push(...written.map(file => path.relative(tree, file)));
			}

			const rootfsLayer = await makeRootfsLayer(rootfsHash, work.path, options);
			options.onProgress?.('Agent layer');
			const agentLayer = await makeAgentLayer(work.path, tree, toolFiles);
			const layoutDir = path.join(work.path, 'layout');
			const writer = new LayoutWriter(layoutDir);
			await fs.mkdir(path.join(layoutDir, 'blobs', 'sha256'), {recursive: true});
			await fs.link(path.join(builderImagesDir(), 'layers', `${rootfsHash}.tar.gz`), path.join(layoutDir, 'blobs', 'sha256', rootfsLayer.digest.slice(7)));
			const manifest = await writer.addImage({
				layers: [agentLayer],
				precompressed: [{descriptor: {mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: rootfsLayer.digest, size: rootfsLayer.size}, diffId: rootfsLayer.diffId}],
				architecture: builderArchitecture(),
				cmd: ['/usr/local/bin/exobuild-agent', 'version'],
				labels: {
					'org.opencontainers.image.title': 'exobuild builder (Debian)', [builderLabels.kind]: 'distro', [builderLabels.inputHash]: inputHash,
					[builderLabels.recipeHash]: recipeHash, ...toolLabels(tools),
				},
			});
			const reference = builderReference('distro', inputHash);
			await writer.finish(manifest, reference.slice(reference.indexOf(':') + 1), {[containerdNameAnnotation]: normaliseReference(reference)});
			const archivePath = archivePathFor(inputHash);
			options.onProgress?.('Write image archive', archivePath);
			// Written in the work folder (reaped if this run is killed), then renamed into place.
			const written = path.join(work.path, 'archive.tar');
			await tar.c({cwd: layoutDir, file: written, portable: true, mtime: new Date(0)}, ['oci-layout', 'index.json', 'blobs']);
			await fs.rename(written, archivePath);
			// Made here from verified parts: recorded as verified.
			await writeVerifiedMemo(inputHash, manifest.digest);
			const image: BuilderImage = {
				archivePath, manifestDigest: manifest.digest, inputHash, architecture: builderArchitecture(), kind: 'distro', reference, recipeHash, ...tools,
			};
			await writeRecord(image);
			return image;
		} finally {
			await work.remove();
		}
	});
};

/**
 * The builder image a build uses, made on first use: a stored current one if there is one (see
 * findBuilderImage), else made by the recipe the driver defaults to: Containerfile.builder with
 * its image builder (macOS), or Debian packages (Linux, where Containerfile.builder needs a
 * builder with BuildKit to be built with).
 */
export const ensureBuilderImage = async (options: BuilderOptions & {driver?: SandboxDriver} = {}): Promise<BuilderImage> => {
	if (!options.force) {
		const existing = await findBuilderImage(options);
		if (existing !== undefined) {
			// Checked against its record when used, not only when loaded (cheap unless the file changed).
			await verifyStoredArchive(existing);
			return existing;
		}
	}

	if (options.driver?.defaultRecipe === 'containerfile') {
		options.onProgress?.('Building the builder image from Containerfile.builder (first use; several minutes)');
		return buildContainerfileBuilder(options.driver, options);
	}

	options.onProgress?.('Making the builder image from Debian packages (first use; a minute or two)');
	return createBuilderImage(options);
};
