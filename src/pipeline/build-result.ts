/** What a build hands back: the image's identity, where it went, and what the run did. */
import type {AgentEventOf} from '../agent/contract.js';

export interface BuildStep {
	readonly name: string;
	readonly platform: string | undefined;
	readonly cached: boolean;
	readonly ms: number | undefined;
}

export interface BuildResult {
	readonly digest: string;
	readonly platforms: readonly string[];
	readonly engine: string;
	readonly output: string | undefined;
	/** The result's top descriptor (an image index for several platforms, a manifest for one). */
	readonly descriptor: {readonly mediaType: string; readonly digest: string; readonly size: number};
	/** The image config's digest (one platform only). */
	readonly configDigest: string | undefined;
	readonly handlers: ReadonlyArray<AgentEventOf<'handler'>>;
	/** The engine's build steps, as read from its output. */
	readonly steps: readonly BuildStep[];
	/** Milliseconds per phase (host and agent phases; per-platform phases summed). */
	readonly phaseMs: Readonly<Record<string, number>>;
	/** A build routed to nodes: which node built which platforms (the rest: the local sandbox). */
	readonly nodes?: ReadonlyArray<{readonly name: string; readonly address: string; readonly platforms: readonly string[]}>;
}
