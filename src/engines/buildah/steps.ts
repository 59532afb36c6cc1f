/**
 * buildah's steps from `buildah build` output: `[1/2] STEP 2/4: RUN …` (the stage prefix only in
 * multi-stage builds) starts a step, `--> Using cache <id>` marks it cached, and the next STEP,
 * a `COMMIT` line or the end closes it. One platform at a time, so open steps are per platform.
 */
import type {StepBook, StepChange, StepParser, Step} from '../step-parser.js';

const stepLine = /^(?:\[(\d+)\/(\d+)\] )?STEP (\d+)\/(\d+): (.*)$/;

export class BuildahSteps implements StepParser {
	readonly #book: StepBook;
	/** The open step of each platform. */
	readonly #open = new Map<string, Step>();

	constructor(book: StepBook) {
		this.#book = book;
	}

	onLine(platform: string | undefined, line: string): StepChange[] {
		const key = platform ?? '';
		const match = stepLine.exec(line);
		if (match !== null) {
			const [, stage, stages, index, total, instruction] = match;
			const where = [platform, stage !== undefined && stages !== '1' ? `stage ${stage}` : undefined].filter(Boolean).join(' ');
			const closed = this.#close(key);
			const step = this.#book.add(`[${where ? `${where} ` : ''}${index}/${total}] ${instruction}`, platform);
			this.#open.set(key, step);
			return [...closed, {step, state: 'start'}];
		}

		if (line.startsWith('--> Using cache ')) {
			const step = this.#open.get(key);
			if (step === undefined || step.cached) {
				return [];
			}

			step.cached = true;
			return [{step, state: 'cached'}];
		}

		return line.startsWith('COMMIT ') ? this.#close(key) : [];
	}

	marksStep(line: string): boolean {
		return stepLine.test(line) || line.startsWith('--> Using cache ');
	}

	end(): StepChange[] {
		return [...this.#open.keys()].flatMap(key => this.#close(key));
	}

	#close(key: string): StepChange[] {
		const step = this.#open.get(key);
		this.#open.delete(key);
		return step === undefined ? [] : this.#book.finish(step, Math.round(this.#book.now() - step.startedAt));
	}
}
