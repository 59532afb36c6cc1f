/**
 * The sandbox's mounts and the agent's argv for a build request (docs/agent-protocol.md).
 * Pure: no I/O, so the exact command line is unit-tested.
 */
import path from 'node:path';
import {handlerSpec, type Platform} from '../platforms/parse.js';
import type {Mount} from '../sandboxes/runtime.js';
import type {Secret} from '../cli/build-flags/engine-options.js';
import type {BuildRequest} from '../request/build-request.js';

export const sandboxPaths = {
	context: '/exobuild/context',
	dockerfileDir: '/exobuild/dockerfile',
	contexts: '/exobuild/contexts',
	views: '/exobuild/views',
	out: '/exobuild/out',
	state: '/exobuild/state',
	cache: '/exobuild/cache',
	cacheFrom: '/exobuild/cache-from',
	cacheTo: '/exobuild/cache-to',
	secrets: '/exobuild/secrets',
	ssh: '/exobuild/ssh',
	localContexts: '/exobuild/local-contexts',
} as const;

/** Host files of --secret src= values (mounted read-only). env= secrets never become files: see secretsBlock. */
export type SecretFiles = ReadonlyMap<string, string>;

/**
 * The env= secrets as the agent reads them on its stdin with `--secrets-stdin N`: N lines of
 * `ID<TAB>BASE64(value)` (docs/agent-protocol.md). The agent writes each into a tmpfs of its own
 * sandbox, so a value never touches the host's disk. Undefined when there are none.
 */
export const secretsBlock = (secrets: readonly Secret[], env: NodeJS.ProcessEnv): string | undefined => {
	const lines = secrets.filter(secret => secret.src === undefined && secret.env !== undefined)
		.map(secret => `${secret.id}\t${Buffer.from(env[secret.env!] ?? '', 'utf8').toString('base64')}\n`);
	return lines.length === 0 ? undefined : lines.join('');
};

/** Host folders of the engine's cache: one read-write `dir`, or a `from` to read and a `to` to write. */
export interface CacheFolders {
	readonly dir?: string;
	readonly from?: string;
	readonly to?: string;
}

/** A platform id as a file name: linux/arm/v7 → linux-arm-v7. */
export const platformSlug = (platformId: string): string => platformId.replaceAll('/', '-');

/** A named build context after its OCI layout was resolved on the host. */
export interface ResolvedBuildContext {
	readonly name: string;
	readonly layoutDir: string;
	/** Digest of the layout's top-level descriptor (for BuildKit's oci-layout://NAME@DIGEST). */
	readonly topDigest: string;
}

export interface HostScratch {
	/** Host folder mounted rw at /exobuild/out. */
	readonly outDir: string;
	/** Host folder mounted ro at /exobuild/views, holding views/<i>/<platform-slug>/ (one-platform layouts). */
	readonly viewsDir: string;
}

export const buildMounts = (request: BuildRequest, contexts: readonly ResolvedBuildContext[], scratch: HostScratch, cache: CacheFolders = {}, secretFiles: SecretFiles = new Map()): Mount[] => [
	{hostPath: request.contextDir, sandboxPath: sandboxPaths.context, readOnly: true},
	...[...secretFiles].map(([id, file]) => ({hostPath: file, sandboxPath: `${sandboxPaths.secrets}/${id}`, readOnly: true})),
	...request.engineOptions.ssh.map(source => ({hostPath: source.path, sandboxPath: `${sandboxPaths.ssh}/${source.id}`, readOnly: true})),
	...request.engineOptions.localContexts.map(([, folder], index) => ({hostPath: folder, sandboxPath: `${sandboxPaths.localContexts}/${index}`, readOnly: true})),
	...(cache.dir === undefined ? [] : [{hostPath: cache.dir, sandboxPath: sandboxPaths.cache, readOnly: false}]),
	...(cache.from === undefined ? [] : [{hostPath: cache.from, sandboxPath: sandboxPaths.cacheFrom, readOnly: true}]),
	...(cache.to === undefined ? [] : [{hostPath: cache.to, sandboxPath: sandboxPaths.cacheTo, readOnly: false}]),
	{hostPath: path.dirname(request.dockerfile), sandboxPath: sandboxPaths.dockerfileDir, readOnly: true},
	...contexts.map((context, index) => ({hostPath: context.layoutDir, sandboxPath: `${sandboxPaths.contexts}/${index}`, readOnly: true})),
	...(contexts.length > 0 ? [{hostPath: scratch.viewsDir, sandboxPath: sandboxPaths.views, readOnly: true}] : []),
	{hostPath: scratch.outDir, sandboxPath: sandboxPaths.out, readOnly: false},
];

/** `--platform ID --handler ID=NAME:MAGIC:MASK:UNAME` of each platform (build and prove). */
export const platformHandlerArgs = (platforms: readonly Platform[]): string[] =>
	platforms.flatMap(platform => ['--platform', platform.id, '--handler', `${platform.id}=${handlerSpec(platform.arch)}:${platform.arch.unameMachine}`]);

export const agentArgs = (request: BuildRequest, contexts: readonly ResolvedBuildContext[], cache: CacheFolders = {}): string[] => {
	const args = ['build', '--engine', request.engine, ...platformHandlerArgs(request.platforms)];

	args.push(
		'--context', sandboxPaths.context,
		'--dockerfile', `${sandboxPaths.dockerfileDir}/${path.basename(request.dockerfile)}`,
		'--output', `${sandboxPaths.out}/oci-layout`,
		'--state-dir', sandboxPaths.state,
	);
	for (const tag of request.tags) {
		args.push('--tag', tag);
	}

	for (const [key, value] of request.buildArgs) {
		args.push('--build-arg', `${key}=${value}`);
	}

	if (request.target !== undefined) {
		args.push('--target', request.target);
	}

	if (request.noCache) {
		args.push('--no-cache');
	}

	const options = request.engineOptions;
	for (const [key, value] of options.labels) {
		args.push('--label', `${key}=${value}`);
	}

	for (const [key, value] of options.annotations) {
		args.push('--annotation', `${key}=${value}`);
	}

	for (const stage of options.noCacheFilter) {
		args.push('--no-cache-filter', stage);
	}

	if (options.pull) {
		args.push('--pull');
	}

	if (options.network !== 'default') {
		args.push('--network', options.network);
	}

	for (const [host, ip] of options.addHosts) {
		args.push('--add-host', `${host}:${ip}`);
	}

	for (const secret of options.secrets) {
		if (secret.src !== undefined) {
			args.push('--secret', `id=${secret.id},src=${sandboxPaths.secrets}/${secret.id}`);
		}
	}

	const fromStdin = options.secrets.filter(secret => secret.src === undefined && secret.env !== undefined).length;
	if (fromStdin > 0) {
		args.push('--secrets-stdin', String(fromStdin));
	}

	for (const source of options.ssh) {
		args.push('--ssh', `${source.id}=${sandboxPaths.ssh}/${source.id}`);
	}

	if (options.shmSize !== undefined) {
		args.push('--shm-size', String(options.shmSize));
	}

	for (const ulimit of options.ulimits) {
		args.push('--ulimit', ulimit);
	}

	if (options.sbom !== undefined) {
		args.push('--sbom', options.sbom);
	}

	if (options.provenance !== undefined) {
		args.push('--provenance', options.provenance);
	}

	if (options.sourceDateEpoch !== undefined) {
		args.push('--source-date-epoch', String(options.sourceDateEpoch));
	}

	for (const [index, [name]] of options.localContexts.entries()) {
		args.push('--named-context', `${name}=${sandboxPaths.localContexts}/${index}`);
	}

	if (request.progress === 'rawjson') {
		args.push('--progress', 'rawjson');
	}

	if (request.hangTimeoutSeconds > 0) {
		args.push('--hang-timeout', String(request.hangTimeoutSeconds));
	}

	if (cache.dir !== undefined) {
		args.push('--cache-dir', sandboxPaths.cache);
	}

	if (cache.from !== undefined) {
		args.push('--cache-from', sandboxPaths.cacheFrom);
	}

	if (cache.to !== undefined) {
		args.push('--cache-to', sandboxPaths.cacheTo);
	}

	for (const [index, context] of contexts.entries()) {
		args.push('--base', `${context.name}=${sandboxPaths.contexts}/${index}@${context.topDigest}`);
		for (const platform of request.platforms) {
			args.push('--base-platform', `${context.name}=${platform.id}=${sandboxPaths.views}/${index}/${platformSlug(platform.id)}`);
		}
	}

	return args;
};
