/**
 * The engine a build runs, decided on the host before any sandbox starts (src/pipeline/run-build.ts
 * `decideEngine`), and what the agent's argv is made from (src/pipeline/run-agent-stage.ts
 * `agentArgv`).
 *
 * It carries the chosen Engine (src/engines/<engine>), whose `plan(request, layout)` the agent's
 * argv serializes.
 */
import type {Engine} from '../engines/index.js';

export interface EngineDecision {
	/** The engine the build runs in (BuildKit wherever the builder has it). */
	readonly engine: Engine;
	/** Printed once, as warnings, before the sandbox starts (e.g. buildah's cache and bases without history). */
	readonly warnings: readonly string[];
}
