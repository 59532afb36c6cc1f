/**
 * A build request: what the user asked for, validated (zod) and normalised, with every path
 * absolute and every file checked to exist. Built from CLI options by ./options.ts.
 */
import {z} from 'zod';
import {engineKinds} from '../engines/plan.js';
import type {OutputTarget} from '../outputs/target.js';
import type {Platform} from '../platforms/parse.js';
import type {DriverName, DriverOptions} from '../sandboxes/driver.js';
import type {EngineOptions} from '../cli/build-flags/engine-options.js';

export const progressModes = ['auto', 'plain', 'tty', 'quiet', 'rawjson'] as const;
/** `auto` (BuildKit wherever the builder has it) or an engine of src/engines. */
export const engineNames = ['auto', ...engineKinds] as const;

export const buildContextSchema = z.object({
	/** The name a `FROM NAME` / `COPY --from=NAME` refers to. */
	name: z.string().min(1),
	/** Absolute path of an OCI image layout folder. */
	layoutDir: z.string().startsWith('/'),
	/** Optional tag in the layout (org.opencontainers.image.ref.name) or digest pin. */
	ref: z.string().optional(),
	digest: z.string().regex(/^sha256:[a-f0-9]{64}$/).optional(),
});
export type BuildContext = z.infer<typeof buildContextSchema>;

export {outputTargetSchema as outputSchema} from '../outputs/target.js';
/** Where the image goes (src/outputs). */
export type OutputSpec = OutputTarget;


/** Where the engine's cache comes from and goes: the project's cache folder, or folders the user named. */
export type CacheSpec =
	| {readonly kind: 'project'}
	| {readonly kind: 'local'; readonly from?: string; readonly to?: string};

/** `--node NAME[=P,P]`: the node NAME builds these platforms (all of its stored ones the build asks for, when none are given). */
export interface NodeChoice {
	readonly name: string;
	readonly platforms: readonly Platform[] | undefined;
}

/** Where the platforms are built (src/pipeline/routing.ts). Absent: configured nodes serve their platforms, no fallback. */
export interface RoutingRequest {
	readonly nodes: readonly NodeChoice[];
	/** `--fallback local`: a node that does not answer has its platforms built in the local sandbox. */
	readonly fallback: 'none' | 'local';
}

export interface BuildRequest {
	readonly contextDir: string;
	readonly dockerfile: string;
	/** The Dockerfile's text when it came from stdin (-f -); the build writes it to its scratch folder. */
	readonly dockerfileText: string | undefined;
	readonly platforms: readonly Platform[];
	readonly tags: readonly string[];
	/** In command-line order; later values of a key win. */
	readonly buildArgs: ReadonlyArray<readonly [string, string]>;
	readonly target: string | undefined;
	readonly noCache: boolean;
	readonly cache: CacheSpec;
	/** Seconds a build step may go without output and CPU before it is stopped as hung (0: never). */
	readonly hangTimeoutSeconds: number;
	/** Files to write after a successful build: buildx's metadata JSON, and the image id. */
	readonly metadataFile: string | undefined;
	readonly iidFile: string | undefined;
	readonly buildContexts: readonly BuildContext[];
	/** Flags passed through to the engine (labels, secrets, network…). */
	readonly engineOptions: EngineOptions;
	readonly output: OutputSpec | undefined;
	readonly progress: (typeof progressModes)[number];
	readonly engine: (typeof engineNames)[number];
	readonly driver: DriverName;
	/** Import the result into the driver's image store under `tags` (buildx --load). */
	readonly load: boolean;
	/** Push the result to each tag's registry (buildx --push), with the docker config's credentials. */
	readonly push: boolean;
	/** The sandbox VM's resources and features (apple-container; refused by linux-userns). */
	readonly driverOptions: DriverOptions;
	/** --node and --fallback. */
	readonly routing?: RoutingRequest;
}
