/**
 * Build steps read from an engine's output, so that progress can show `[linux/ppc64le 2/4] RUN …`,
 * mark cached steps and time each one. Each engine has its own parser (./buildkit/steps.ts,
 * ./buildah/steps.ts); src/progress/steps.ts (StepTracker) feeds them.
 */
export interface Step {
	/** `[linux/ppc64le 2/4] RUN …` (`[linux/ppc64le work 2/4] …` for a named or numbered stage). */
	readonly name: string;
	readonly platform: string | undefined;
	cached: boolean;
	done: boolean;
	readonly startedAt: number;
	ms: number | undefined;
}

export type StepChange = {readonly step: Step; readonly state: 'start' | 'cached' | 'done'};

/** The steps seen so far and the clock, shared by the parsers of one build. */
export class StepBook {
	readonly steps: Step[] = [];
	readonly now: () => number;

	constructor(now: () => number) {
		this.now = now;
	}

	add(name: string, platform: string | undefined): Step {
		const step: Step = {name, platform, cached: false, done: false, startedAt: this.now(), ms: undefined};
		this.steps.push(step);
		return step;
	}

	/** Marks `step` done after `ms` (once). */
	finish(step: Step, ms: number): StepChange[] {
		if (step.done) {
			return [];
		}

		step.done = true;
		step.ms = ms;
		return [{step, state: 'done'}];
	}
}

/** One engine's reading of its log lines. */
export interface StepParser {
	/** Feeds one engine log line of `platform` (undefined: all platforms at once); returns what it changed. */
	onLine(platform: string | undefined, line: string): StepChange[];
	/** Closes every open step (the engine finished). */
	end(): StepChange[];
	/**
	 * Whether `line` only marks a step (its start, cache hit or end): the step events render it,
	 * so a reporter that prints them need not print the line too (no line twice).
	 */
	marksStep(line: string): boolean;
}
