/**
 * The one interface every sandbox driver implements (after docker/buildx's driver packages).
 * Each driver lives in its own folder (linux-userns/, apple-container/) and is created through
 * `createDriver` in ./index.ts; nothing outside src/sandboxes knows which one is in use.
 *
 * A sandbox is throwaway: `start` boots it from the builder image with the given mounts,
 * `runAgent` runs vm-image/exobuild-agent in it and streams its stdout/stderr lines, `stop`
 * destroys it with everything it created (processes, mounts, binfmt handlers, temp dirs) and is
 * idempotent. A run killed hard leaves state that `reapOrphans` of a later run removes.
 */
import type {BuilderImage} from '../builder-image/builder-image.js';
import type {BuilderKind} from '../builder-image/identity.js';

export type DriverName = 'linux-userns' | 'apple-container';

export interface Mount {
	readonly hostPath: string;
	/** Absolute path inside the sandbox, under /exobuild. */
	readonly sandboxPath: string;
	readonly readOnly: boolean;
}

/** A volume of the driver's own (Apple's `container volume`), attached read-write in the sandbox. */
export interface VolumeMount {
	/** The volume's name, as the driver's StateVolumes.ensure returned it. */
	readonly volume: string;
	/** Absolute path inside the sandbox, under /exobuild. */
	readonly sandboxPath: string;
}

export interface SandboxSpec {
	/** Unique per build (also names temp dirs, labels, and orphan records). */
	readonly sessionId: string;
	readonly builderImage: BuilderImage;
	readonly mounts: readonly Mount[];
	/** Volumes of the driver's own (only from a driver whose engineState is kind 'volume'; others refuse them). */
	readonly volumes?: readonly VolumeMount[];
	/** Extra environment for the agent (never secrets). */
	readonly env?: Readonly<Record<string, string>>;
	/** Aborting stops the start (e.g. the first unpack of the builder image) as soon as it can. */
	readonly signal?: AbortSignal;
}

export interface AgentRun {
	/** Arguments after the agent's path, e.g. ['build', '--platform', 'linux/ppc64le', …]. */
	readonly args: readonly string[];
	readonly onStdoutLine: (line: string) => void;
	readonly onStderrLine: (line: string) => void;
	/** Aborting kills the agent and everything it started. */
	readonly signal?: AbortSignal;
	/**
	 * Written to the agent's stdin, which is then closed (without it, stdin is empty). Carries
	 * what must never be on disk or in an argv: the env= secrets (docs/agent-protocol.md).
	 */
	readonly stdin?: string;
}

export interface AgentExit {
	readonly exitCode: number | undefined;
	readonly signal: string | undefined;
}

export interface Sandbox {
	readonly id: string;
	runAgent(run: AgentRun): Promise<AgentExit>;
	/** Destroys the sandbox and everything it created. Safe to call more than once. */
	stop(): Promise<void>;
}

export interface DriverFeatures {
	/** The sandbox registers its own binfmt handlers without touching the host's table. */
	readonly privateBinfmt: boolean;
	/** CPU architecture the sandbox runs natively (uname -m inside). */
	readonly nativeMachine: string;
}

/**
 * The volumes a driver keeps BuildKit's state in, one per state slot. src/pipeline/engine-state.ts
 * decides which slot a build holds (lock, owner record, seal); the driver only makes, lists and
 * removes the volume behind a slot number.
 */
export interface StateVolumes {
	/** Why this host cannot keep the state in volumes (e.g. a CLI too old), or undefined when it can. */
	unavailable(): Promise<string | undefined>;
	/** Slot N's volume, made (labelled as exobuild's, with the slot) when there is none; `created`: made now, so empty. */
	ensure(slot: number): Promise<{readonly name: string; readonly created: boolean}>;
	/** Removes slot N's volume; nothing when there is none. */
	remove(slot: number): Promise<void>;
	/** Every slot volume there is, with the bytes it takes on the host (0 where that cannot be read). */
	list(): Promise<ReadonlyArray<{readonly slot: number; readonly name: string; readonly bytes: number}>>;
}

/**
 * How a driver keeps BuildKit's root between its throwaway sandboxes (absent: it is not kept).
 * 'host-folder': the slot's folder in exobuild's cache is mounted read-write (a Mount);
 * 'volume': a volume of the driver's own is attached (a VolumeMount), as docker/buildx's
 * docker-container driver keeps BuildKit's state in a volume that outlives the container.
 */
export type EngineStateKeeping =
	| {readonly kind: 'host-folder'}
	| {readonly kind: 'volume'; readonly volumes: StateVolumes};

export interface ReapReport {
	/** Ids of orphaned sandboxes (from runs that were killed) that were removed. */
	readonly removed: readonly string[];
}

/** Options a user gives to the driver itself (--cpus, --memory, …); a driver refuses those it has no use for. */
export interface DriverOptions {
	/** CPUs of the sandbox VM. */
	readonly cpus?: number;
	/** Memory of the sandbox VM, e.g. "8G". */
	readonly memory?: string;
	/** Nested virtualization (KVM inside the VM). */
	readonly virtualization?: boolean;
	/** Rosetta for linux/amd64 on arm64 hosts. */
	readonly rosetta?: boolean;
}

export interface LoadReport {
	/** References now in the driver's image store. */
	readonly loaded: readonly string[];
	/** What the user should know (e.g. a multi-platform index loaded as per-platform tags). */
	readonly notes: readonly string[];
}

/** A base image the Containerfile names by a build arg, served from an OCI layout for this build only. */
export interface BaseImageOverride {
	/** The build arg whose value is the image reference, e.g. UBUNTU_IMAGE. */
	readonly arg: string;
	/** The named context (and the build arg's value) that stands for the image in this build. */
	readonly contextName: string;
	/** Absolute path of the OCI image layout folder serving it. */
	readonly layoutDir: string;
}

export interface ImageBuildRequest {
	readonly containerfile: string;
	readonly contextDir: string;
	readonly buildArgs: Readonly<Record<string, string>>;
	readonly platform: string;
	/** Base images served from OCI layouts instead of a registry (drivers without `buildImageOverrides` refuse them). */
	readonly baseImages?: readonly BaseImageOverride[];
	/** Labels added to the built image's config (given only with baseImages, so only to drivers with `buildImageOverrides`). */
	readonly labels?: Readonly<Record<string, string>>;
	/** OCI image archive to write. */
	readonly dest: string;
	readonly onLine?: (line: string) => void;
	readonly signal?: AbortSignal;
}

/** One row of `exobuild doctor`: what was checked, how it went, and what to do about it. */
export type CheckStatus = 'ok' | 'warn' | 'fail';
export interface CheckRow {
	/** host, builder, sandbox, or a platform id. */
	readonly area: string;
	readonly check: string;
	readonly status: CheckStatus;
	readonly detail: string;
	/** What to do; every warn and fail row has one. */
	readonly fix?: string;
}

export interface SandboxDriver {
	readonly name: DriverName;
	/** The builder recipe `builder build` uses, and a build that has no builder makes, by default. */
	readonly defaultRecipe: BuilderKind;
	/** `buildImage` can serve base images from OCI layouts (ImageBuildRequest.baseImages). */
	readonly buildImageOverrides?: boolean;
	/** Where BuildKit's state is kept between sandboxes; absent: every build starts from an empty state. */
	readonly engineState?: EngineStateKeeping;
	/** Checks the host can run this driver; throws a UserError with a fix otherwise. */
	features(): Promise<DriverFeatures>;
	/**
	 * `exobuild doctor`'s host rows: each check of features() on its own (a failure becomes a
	 * fail row with the UserError's hint as the fix), plus what only this driver knows about.
	 * Never throws for a failed check.
	 */
	readonly diagnose?: () => Promise<CheckRow[]>;
	start(spec: SandboxSpec): Promise<Sandbox>;
	reapOrphans(): Promise<ReapReport>;
	/** Imports an OCI image archive into the driver's image store under `tags` (`--load`); absent where there is no store. */
	readonly loadImage?: (archivePath: string, tags: readonly string[]) => Promise<LoadReport>;
	/** Pulls REF from a registry and writes it as an OCI archive (`builder pull`); absent where the driver has no registry client. */
	readonly pullImage?: (reference: string, platform: string, dest: string) => Promise<void>;
	/** Builds a Containerfile into an OCI archive with the driver's own builder (`builder build`); absent where there is none. */
	readonly buildImage?: (request: ImageBuildRequest) => Promise<void>;
}
