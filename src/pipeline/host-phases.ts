/**
 * The host phases of one build (src/progress/events.ts `buildPhases`): each is reported as it
 * starts and ends, timed into `phaseMs` (which also sums the agent's phases), and refused once
 * the build was aborted.
 */
import type {BuildReporter, HostPhase} from '../progress/events.js';
import {abortable, abortReason} from './abort.js';

export interface HostPhases {
	/** Milliseconds per phase, host and agent (per-platform agent phases summed). */
	readonly phaseMs: Record<string, number>;
	/** Runs `run` as `phase`: refused after an abort, and no longer waited for once the signal aborts. */
	run<T>(phase: HostPhase, run: () => Promise<T>, detail?: (value: T) => string | undefined): Promise<T>;
	/** Adds `ms` to a phase's time (the agent's phase-end events). */
	add(phase: string, ms: number): void;
}

export const hostPhases = (reporter: BuildReporter, signal: AbortSignal | undefined, now: () => number = () => performance.now()): HostPhases => {
	const phaseMs: Record<string, number> = {};
	const add = (phase: string, ms: number): void => {
		phaseMs[phase] = (phaseMs[phase] ?? 0) + ms;
	};

	return {
		phaseMs,
		add,
		async run(phase, run, detail) {
			if (signal?.aborted) {
				throw abortReason(signal);
			}

			const started = now();
			reporter.report({kind: 'host-phase', phase, state: 'start'});
			const value = await abortable(run(), signal);
			const ms = Math.round(now() - started);
			add(phase, ms);
			const text = detail?.(value);
			reporter.report({kind: 'host-phase', phase, state: 'end', ms, ...(text === undefined ? {} : {detail: text})});
			return value;
		},
	};
};
