/**
 * The sandbox's mounts, where they are inside it (the SandboxLayout engine modules build their
 * argv from), and the agent's argv for an EnginePlan (docs/agent-protocol.md).
 * Pure: no I/O, so the exact command line is unit-tested.
 */
import path from 'node:path';
import {handlerSpec, type Platform} from '../platforms/parse.js';
import type {EnginePlan, EngineStep, SandboxLayout} from '../engines/plan.js';
import type {Mount, VolumeMount} from '../sandboxes/driver.js';
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
	/** BuildKit's kept root (a state slot of exobuild's cache, src/pipeline/engine-state.ts). */
	engineState: '/exobuild/engine-state',
	secrets: '/exobuild/secrets',
	ssh: '/exobuild/ssh',
	localContexts: '/exobuild/local-contexts',
	/** The tmpfs the agent writes env= secrets into (from its stdin). */
	stdinSecrets: '/run/exobuild-secrets',
} as const;

/** The OCI image layout the engine writes, and the daemon log the host keeps (both in the shared out folder). */
export const outputLayoutPath = `${sandboxPaths.out}/oci-layout`;
export const daemonLogPath = `${sandboxPaths.out}/engine-daemon.log`;
/** The daemon log's name in the host's out folder (see keepDaemonLog). */
export const daemonLogName = path.posix.basename(daemonLogPath);

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
	/** A state slot's root, kept between builds (BuildKit's --root; src/pipeline/engine-state.ts). */
	readonly engineState?: EngineStateAttachment;
}

/** Where a state slot's root is: a host folder mounted read-write, or a volume of the driver's own. */
export type EngineStateAttachment = {readonly hostPath: string} | {readonly volume: string};

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
	...(cache.engineState === undefined || !('hostPath' in cache.engineState) ? [] : [{hostPath: cache.engineState.hostPath, sandboxPath: sandboxPaths.engineState, readOnly: false}]),
	{hostPath: path.dirname(request.dockerfile), sandboxPath: sandboxPaths.dockerfileDir, readOnly: true},
	...contexts.map((context, index) => ({hostPath: context.layoutDir, sandboxPath: `${sandboxPaths.contexts}/${index}`, readOnly: true})),
	...(contexts.length > 0 ? [{hostPath: scratch.viewsDir, sandboxPath: sandboxPaths.views, readOnly: true}] : []),
	{hostPath: scratch.outDir, sandboxPath: sandboxPaths.out, readOnly: false},
];

/** The driver's volumes the sandbox attaches (a state slot kept in a volume), at the paths sandboxLayout names. */
export const buildVolumes = (cache: CacheFolders = {}): VolumeMount[] =>
	cache.engineState === undefined || !('volume' in cache.engineState) ? [] : [{volume: cache.engineState.volume, sandboxPath: sandboxPaths.engineState}];

/** `--platform ID --handler ID=NAME:MAGIC:MASK:UNAME` of each platform (build and prove). */
export const platformHandlerArgs = (platforms: readonly Platform[]): string[] =>
	platforms.flatMap(platform => ['--platform', platform.id, '--handler', `${platform.id}=${handlerSpec(platform.arch)}:${platform.arch.unameMachine}`]);

/**
 * Where the mounts of buildMounts (same arguments) are inside the sandbox: the one place engine
 * modules get sandbox paths from (src/engines/plan.ts). env= secrets are files the agent writes
 * on its own tmpfs from its stdin (secretsBlock), src= ones are mounted.
 */
export const sandboxLayout = (request: BuildRequest, contexts: readonly ResolvedBuildContext[], cache: CacheFolders = {}): SandboxLayout => ({
	context: sandboxPaths.context,
	dockerfile: `${sandboxPaths.dockerfileDir}/${path.basename(request.dockerfile)}`,
	outputLayout: outputLayoutPath,
	state: sandboxPaths.state,
	...(cache.engineState === undefined ? {} : {engineState: sandboxPaths.engineState}),
	cache: {
		...(cache.dir === undefined ? {} : {dir: sandboxPaths.cache}),
		...(cache.from === undefined ? {} : {from: sandboxPaths.cacheFrom}),
		...(cache.to === undefined ? {} : {to: sandboxPaths.cacheTo}),
	},
	secretFiles: new Map(request.engineOptions.secrets.flatMap((secret): Array<[string, string]> => {
		if (secret.src !== undefined) {
			return [[secret.id, `${sandboxPaths.secrets}/${secret.id}`]];
		}

		return secret.env === undefined ? [] : [[secret.id, `${sandboxPaths.stdinSecrets}/${secret.id}`]];
	})),
	sshSources: new Map(request.engineOptions.ssh.map(source => [source.id, `${sandboxPaths.ssh}/${source.id}`])),
	localContexts: new Map(request.engineOptions.localContexts.map(([name], index) => [name, `${sandboxPaths.localContexts}/${index}`])),
	bases: contexts.map((context, index) => ({
		name: context.name,
		layout: `${sandboxPaths.contexts}/${index}`,
		topDigest: context.topDigest,
		views: new Map(request.platforms.map(platform => [platform.id, `${sandboxPaths.views}/${index}/${platformSlug(platform.id)}`])),
	})),
});

/** The agent's own options (everything but the platforms and the plan). */
export interface AgentOptions {
	/** The hang watchdog's timeout; 0: off. */
	readonly hangTimeoutSeconds: number;
	/** How many env= secrets the host writes to the agent's stdin (secretsBlock). */
	readonly secretsFromStdin: number;
	/** The engine daemon's output also as `log` events of source "daemon" (exobuild --debug). */
	readonly debug: boolean;
	/** Defaults: the sandbox layout's (sandboxPaths.state, outputLayoutPath, daemonLogPath). */
	readonly stateDir?: string;
	readonly outputLayout?: string;
	readonly daemonLog?: string;
}

/** `-` stands for an empty field of a step (docs/agent-protocol.md). */
const field = (value: string | undefined): string => (value === undefined || value === '' ? '-' : value);

const counted = (words: readonly string[]): string[] => [String(words.length), ...words];

const checkWords = (step: EngineStep, words: readonly string[]): void => {
	if (step.argv.length === 0) {
		throw new Error(`internal: a ${step.kind} step of the engine plan has an empty argv`);
	}

	const bad = words.find(word => word.includes('\0'));
	if (bad !== undefined) {
		throw new Error(`internal: a ${step.kind} step of the engine plan has a NUL byte in ${JSON.stringify(bad)}`);
	}
};

/** One step as `--step KIND PHASE PLATFORM CODE MESSAGE OPTS N ARGV… M EXTRA…`. */
export const stepArgs = (step: EngineStep): string[] => {
	switch (step.kind) {
		case 'daemon': {
			checkWords(step, [...step.argv, ...step.rootlessArgs]);
			return ['--step', 'daemon', 'engine-start', '-', '-', '-', '-', ...counted(step.argv), ...counted(step.rootlessArgs)];
		}

		case 'ready': {
			checkWords(step, step.argv);
			if (!Number.isSafeInteger(step.timeoutMs) || step.timeoutMs <= 0) {
				throw new Error(`internal: a ready step's timeout must be a positive number of ms, not ${step.timeoutMs}`);
			}

			return ['--step', 'ready', 'engine-start', '-', '-', '-', `timeout-ms=${step.timeoutMs}`, ...counted(step.argv), '0'];
		}

		case 'version': {
			checkWords(step, step.argv);
			return ['--step', 'version', 'engine-start', '-', '-', '-', '-', ...counted(step.argv), '0'];
		}

		case 'platforms': {
			const pairs = step.expect.flatMap(({platform, text}) => {
				if (text === '' || text.includes('\n')) {
					throw new Error(`internal: the platforms step's text for ${platform} must be one non-empty line, not ${JSON.stringify(text)}`);
				}

				return [platform, text];
			});
			checkWords(step, [...step.argv, ...pairs]);
			return ['--step', 'platforms', 'platform-check', '-', '-', '-', '-', ...counted(step.argv), ...counted(pairs)];
		}

		case 'run': {
			checkWords(step, [...step.argv, step.message]);
			const options = [step.watch ? 'watch' : undefined, step.mayFail === true ? 'may-fail' : undefined].filter(Boolean).join(',');
			return ['--step', 'run', step.phase, field(step.platform), step.errorCode, field(step.message), field(options), ...counted(step.argv), '0'];
		}
	}
};

/** `exobuild-agent build …` for a plan: the agent's options, then every step of the plan in order. */
export const agentArgs = (platforms: readonly Platform[], enginePlan: EnginePlan, agentOptions: AgentOptions): string[] => {
	const args = [
		'build', '--engine', enginePlan.engine, ...platformHandlerArgs(platforms),
		'--state-dir', agentOptions.stateDir ?? sandboxPaths.state,
		'--output', agentOptions.outputLayout ?? outputLayoutPath,
		'--daemon-log', agentOptions.daemonLog ?? daemonLogPath,
	];
	if (agentOptions.hangTimeoutSeconds > 0) {
		args.push('--hang-timeout', String(agentOptions.hangTimeoutSeconds));
	}

	if (agentOptions.secretsFromStdin > 0) {
		args.push('--secrets-stdin', String(agentOptions.secretsFromStdin));
	}

	for (const dir of enginePlan.tmpfs) {
		args.push('--tmpfs', dir);
	}

	if (enginePlan.shmSize !== undefined) {
		args.push('--shm-size', String(enginePlan.shmSize));
	}

	if (agentOptions.debug) {
		args.push('--debug');
	}

	return [...args, ...enginePlan.steps.flatMap(step => stepArgs(step))];
};

/** How many env= secrets secretsBlock writes (the agent's --secrets-stdin). */
export const stdinSecretCount = (secrets: readonly Secret[]): number => secrets.filter(secret => secret.src === undefined && secret.env !== undefined).length;
