/**
 * Stage the build's inputs, on the host, before any sandbox starts:
 * - `resolveInputs`: every named OCI context resolved against the requested platforms (a layout
 *   that does not serve one is refused, exit 2), and what the engine needs to know of each base
 *   (BaseFacts: the length of its image config's `history`, read with the safe readers of
 *   src/oci/blobs.ts);
 * - `stageInputs`: in the build's scratch folder, a Dockerfile from stdin becomes a file and each
 *   base gets a one-platform view per platform; --secret src= files are mounted read-only (env=
 *   values never become files: they go to the agent on its stdin, see secretsBlock).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {platformSlug, sandboxPaths, type ResolvedBuildContext, type SecretFiles} from '../agent/agent-args.js';
import type {BaseFacts} from '../engines/plan.js';
import {readConfig, readManifest, resolvePlatformManifests, userLayout, writePlatformView, type ResolvedLayout} from '../oci/index.js';
import type {BuildContext, BuildRequest} from '../request/build-request.js';
import {abortable} from './abort.js';
import type {OwnedHostScratch} from './host-scratch.js';

export interface ResolvedInputs {
	/** Each named OCI context with the manifest of every requested platform, in request order. */
	readonly contexts: ReadonlyArray<{readonly context: BuildContext; readonly manifests: ResolvedLayout}>;
	/** Per base and platform, what the engine's warnings look at. */
	readonly bases: readonly BaseFacts[];
}

/** The number of entries of an image config's `history` (0 when it has none or it is not a list). */
const historyEntries = (config: Record<string, unknown>): number => {
	const {history} = config;
	return Array.isArray(history) ? history.length : 0;
};

/** What the host reads of each base image, per platform, through the untrusted-layout readers. */
export const readBaseFacts = async (contexts: ResolvedInputs['contexts'], platformIds: readonly string[]): Promise<BaseFacts[]> => {
	const facts: BaseFacts[] = [];
	for (const {context, manifests} of contexts) {
		const source = userLayout(context.layoutDir, `--build-context ${context.name} (${context.layoutDir})`);
		for (const platform of platformIds) {
			const descriptor = manifests.platforms.get(platform);
			if (descriptor === undefined) {
				throw new Error(`internal: no manifest resolved for ${platform} in ${context.layoutDir}`);
			}

			const manifest = await readManifest(source, descriptor);
			const config = await readConfig(source, manifest.config);
			facts.push({name: context.name, platform, historyEntries: historyEntries(config)});
		}
	}

	return facts;
};

/** Validates every named context against the requested platforms and reads its BaseFacts. */
export const resolveInputs = async (request: BuildRequest, signal?: AbortSignal): Promise<ResolvedInputs> => {
	const platformIds = request.platforms.map(platform => platform.id);
	const contexts = await abortable(Promise.all(request.buildContexts.map(async context => {
		// Every build verifies the base's layers; one whose file has not changed is not hashed again.
		const manifests = await resolvePlatformManifests(context.layoutDir, platformIds, {name: context.name, ref: context.ref, digest: context.digest}, {rememberDigests: true});
		return {context, manifests};
	})), signal);
	const bases = await abortable(readBaseFacts(contexts, platformIds), signal);
	return {contexts, bases};
};

export interface StagedInputs {
	/** The request as the sandbox sees it (a Dockerfile from stdin points at its scratch copy). */
	readonly request: BuildRequest;
	readonly contexts: readonly ResolvedBuildContext[];
	/** --secret id → host file (src= only). */
	readonly secretFiles: SecretFiles;
}

/** Writes the Dockerfile from stdin and the one-platform views of each base into `scratch`. */
export const stageInputs = async (request: BuildRequest, resolved: ResolvedInputs, scratch: Pick<OwnedHostScratch, 'root' | 'viewsDir'>): Promise<StagedInputs> => {
	let effective = request;
	if (request.dockerfileText !== undefined) {
		await fs.mkdir(path.join(scratch.root, 'dockerfile'));
		const dockerfile = path.join(scratch.root, 'dockerfile', 'Dockerfile');
		await fs.writeFile(dockerfile, request.dockerfileText);
		effective = {...request, dockerfile};
	}

	const secretFiles = new Map<string, string>();
	for (const secret of request.engineOptions.secrets) {
		if (secret.src !== undefined) {
			secretFiles.set(secret.id, secret.src);
		}
	}

	const contexts: ResolvedBuildContext[] = [];
	for (const [index, {context, manifests}] of resolved.contexts.entries()) {
		contexts.push({name: context.name, layoutDir: context.layoutDir, topDigest: manifests.topDigest});
		for (const platform of request.platforms) {
			const descriptor = manifests.platforms.get(platform.id);
			if (descriptor === undefined) {
				throw new Error(`internal: no manifest resolved for ${platform.id} in ${context.layoutDir}`);
			}

			await writePlatformView(descriptor, `${scratch.viewsDir}/${index}/${platformSlug(platform.id)}`, `${sandboxPaths.contexts}/${index}/blobs`, context.name);
		}
	}

	return {request: effective, contexts, secretFiles};
};
