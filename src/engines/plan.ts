/**
 * What an engine module hands the agent: the engine's whole work as a list of commands, each
 * with its complete argv, built on the host from the request (src/engines/<engine>/argv.ts).
 * The agent (vm-image/exobuild-agent) runs them in order and only supervises: it starts the
 * daemon, polls for readiness, proves platforms, runs each command with its output turned into
 * events and a hang watchdog, and stops the daemon cleanly at the end. It never builds an argv.
 *
 * docker/buildx's `toSolveOpt` (build/opt.go) is the model: one typed translation per engine.
 */
import type {ErrorCode, PhaseName} from '../agent/contract.js';
import type {BuildRequest} from '../request/build-request.js';

export const engineKinds = ['buildkit', 'buildah'] as const;
export type EngineName = (typeof engineKinds)[number];

export type EngineStep =
	/**
	 * A long-running daemon (buildkitd), started in the background before the steps that follow.
	 * Its output goes to the daemon log (a file the host keeps and names on an engine error; shown
	 * as events only with --debug). `rootlessArgs` are appended when the agent finds itself in a
	 * user namespace (the agent detects it; the host cannot know). It is stopped with SIGTERM and
	 * waited for when the agent ends.
	 */
	| {readonly kind: 'daemon'; readonly argv: readonly string[]; readonly rootlessArgs: readonly string[]}
	/** Polled (argv run again until it exits 0) until the daemon answers; fails E_ENGINE_START. */
	| {readonly kind: 'ready'; readonly argv: readonly string[]; readonly timeoutMs: number}
	/** Its first output line is the engine's version, reported in the `engine` event. */
	| {readonly kind: 'version'; readonly argv: readonly string[]}
	/**
	 * Its output must contain `expect[i].text` for each requested platform (fixed strings), else
	 * E_PLATFORM_UNSUPPORTED naming the platforms that are missing.
	 */
	| {readonly kind: 'platforms'; readonly argv: readonly string[]; readonly expect: ReadonlyArray<{readonly platform: string; readonly text: string}>}
	/**
	 * A command whose output is engine log (events with source "engine", parsed by the engine's
	 * step parser on the host), run under the hang watchdog when `watch`. A non-zero exit fails
	 * the run with `errorCode` and `message` (the agent appends the exit code), unless `mayFail`.
	 */
	| {
		readonly kind: 'run';
		readonly phase: PhaseName;
		readonly platform?: string;
		readonly argv: readonly string[];
		readonly errorCode: ErrorCode;
		readonly message: string;
		readonly watch: boolean;
		readonly mayFail?: boolean;
	};

/** Where things are inside the sandbox (the mounts of src/agent/agent-args.ts). */
export interface SandboxLayout {
	readonly context: string;
	/** The Dockerfile, as a path inside the sandbox. */
	readonly dockerfile: string;
	/** The OCI image layout folder the engine writes (must not exist before). */
	readonly outputLayout: string;
	/** Scratch space of this run, gone with the sandbox. */
	readonly state: string;
	/** The engine's own state kept between builds (BuildKit's --root), when the host keeps one; else it lives in `state`. */
	readonly engineState?: string;
	/** Engine cache: one read-write folder, or a folder to read and one to write. */
	readonly cache: {
		readonly dir?: string;
		readonly from?: string;
		readonly to?: string;
		/**
		 * False when the host found no exported cache (no index.json) in the folder BuildKit would
		 * read (`from`, or `dir`/buildkit): the plan then asks for no import, for BuildKit would only
		 * log a `level=warning` "local cache import … not found" and go on (client/solve.go,
		 * moby/buildkit v0.32.2). Absent: assumed importable.
		 */
		readonly importable?: boolean;
	};
	/** --secret values: the file of each id (src= files are mounted; env= values are on a tmpfs). */
	readonly secretFiles: ReadonlyMap<string, string>;
	/** --ssh sources: id → socket or key file. */
	readonly sshSources: ReadonlyMap<string, string>;
	/** --build-context NAME=DIR folders: name → folder. */
	readonly localContexts: ReadonlyMap<string, string>;
	/** Named contexts from OCI layouts (bases): the whole layout, and a one-platform view per platform. */
	readonly bases: ReadonlyArray<{
		readonly name: string;
		readonly layout: string;
		readonly topDigest: string;
		readonly views: ReadonlyMap<string, string>;
	}>;
}

export interface EnginePlan {
	readonly engine: EngineName;
	readonly steps: readonly EngineStep[];
	/** Mount points that must be tmpfs before the engine starts (buildah's containers folder when it holds secrets). */
	readonly tmpfs: readonly string[];
	/** Bytes of the sandbox's /dev/shm, when the engine's RUN steps share it (buildah). */
	readonly shmSize?: number;
}

/** What the host read of a base image (a named context from an OCI layout) before the build. */
export interface BaseFacts {
	readonly name: string;
	readonly platform: string;
	/** Entries of the image config's `history` (0: none, which defeats buildah's layer cache). */
	readonly historyEntries: number;
}

/** Why an engine cannot carry out a request: a one-line cause naming the option, and what to do. */
export interface Refusal {
	readonly message: string;
	readonly hint: string;
}

/** One engine: what it can do and how it is told. */
export interface Engine {
	readonly name: EngineName;
	/**
	 * Why this engine cannot carry out the request (an option it does not have), or undefined.
	 * Checked before any sandbox starts: the CLI exits 2 with the message and a hint.
	 */
	refuse(request: BuildRequest): Refusal | undefined;
	/** The engine's whole work for the request. Pure: no I/O. */
	plan(request: BuildRequest, layout: SandboxLayout): EnginePlan;
	/** Warnings to print once before the build (e.g. buildah's layer cache and bases without history). */
	warnings(request: BuildRequest, bases: readonly BaseFacts[]): readonly string[];
}
