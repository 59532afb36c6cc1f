/**
 * Build steps read from the engine's output (names, cached marks, times), whatever the engine:
 * the parsers live with their engines (src/engines/buildkit/steps.ts, src/engines/buildah/steps.ts).
 * Given no engine, a tracker reads both grammars (they cannot be mistaken for each other).
 */
import {BuildahSteps} from '../engines/buildah/steps.js';
import {BuildKitSteps} from '../engines/buildkit/steps.js';
import type {EngineName} from '../engines/plan.js';
import {StepBook, type Step, type StepChange, type StepParser} from '../engines/step-parser.js';

export type {Step, StepChange} from '../engines/step-parser.js';

const parsersOf = (book: StepBook, engine: EngineName | undefined): StepParser[] => {
	switch (engine) {
		case 'buildkit': {
			return [new BuildKitSteps(book)];
		}

		case 'buildah': {
			return [new BuildahSteps(book)];
		}

		case undefined: {
			return [new BuildahSteps(book), new BuildKitSteps(book)];
		}
	}
};

export class StepTracker {
	readonly #book: StepBook;
	readonly #parsers: StepParser[];

	/** `engine`: whose output this is (both grammars when not given); `now`: the clock, in ms. */
	constructor({engine, now = () => performance.now()}: {readonly engine?: EngineName; readonly now?: () => number} = {}) {
		this.#book = new StepBook(now);
		this.#parsers = parsersOf(this.#book, engine);
	}

	get steps(): readonly Step[] {
		return this.#book.steps;
	}

	/** Feeds one engine log line; returns what it changed. */
	onLine(platform: string | undefined, line: string): StepChange[] {
		for (const parser of this.#parsers) {
			const changes = parser.onLine(platform, line);
			if (changes.length > 0) {
				return changes;
			}
		}

		return [];
	}

	/**
	 * Whether an engine log line only marks a step, which the step events already show: a plain
	 * reporter printing both would print the step twice (BuildKit's `#5 [linux/ppc64le 2/4] RUN …`,
	 * `#5 CACHED`, `#5 DONE 0.3s`; buildah's `STEP 2/4: RUN …`, `--> Using cache …`).
	 */
	marksStep(line: string): boolean {
		return this.#parsers.some(parser => parser.marksStep(line));
	}

	/** Closes every open step (the engine finished). */
	end(): StepChange[] {
		return this.#parsers.flatMap(parser => parser.end());
	}
}
