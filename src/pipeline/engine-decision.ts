/**
 * The engine a build runs, decided on the host before any sandbox starts (src/pipeline/run-build.ts
 * `decideEngine`), and what the agent's argv is made from (src/pipeline/run-agent-stage.ts
 * `agentArgv`).
 *
 * Today the agent resolves `auto` itself and the decision carries the requested name; once the
 * engine modules (src/engines/<engine>, the Engine of src/engines/plan.ts) are wired in, it
 * carries the chosen Engine, whose `plan(request, layout)` the argv serializes.
 */
import type {BuildRequest} from '../request/build-request.js';

export interface EngineDecision {
	/** The engine named to the agent (`auto`: the agent picks BuildKit where the builder has it). */
	readonly engine: BuildRequest['engine'];
	/** Printed once, as warnings, before the sandbox starts (e.g. buildah's cache and bases without history). */
	readonly warnings: readonly string[];
}
