/**
 * BuildKit's steps from `buildctl build --progress plain`: `#5 [linux/ppc64le 2/4] RUN …` starts
 * vertex 5, `#5 CACHED` marks it cached (and done), `#5 DONE 0.3s` ends it. Vertices are re-sent
 * as they change: keyed by number. (With --progress rawjson the lines are JSON and no step is read.)
 */
import type {StepBook, StepChange, StepParser, Step} from '../step-parser.js';

const vertexLine = /^#(\d+) \[([^\]]+)\] (.*)$/;
const cachedLine = /^#(\d+) CACHED$/;
const doneLine = /^#(\d+) DONE (\d+(?:\.\d+)?)s$/;

export class BuildKitSteps implements StepParser {
	readonly #book: StepBook;
	readonly #vertices = new Map<string, Step>();

	constructor(book: StepBook) {
		this.#book = book;
	}

	onLine(platform: string | undefined, line: string): StepChange[] {
		const vertex = vertexLine.exec(line);
		if (vertex !== null) {
			const [, id, where, instruction] = vertex;
			if (this.#vertices.has(id!)) {
				return [];
			}

			const step = this.#book.add(`[${where}] ${instruction}`, where!.startsWith('linux/') ? where!.split(' ')[0] : platform);
			this.#vertices.set(id!, step);
			return [{step, state: 'start'}];
		}

		const cached = cachedLine.exec(line);
		const cachedStep = cached === null ? undefined : this.#vertices.get(cached[1]!);
		if (cachedStep !== undefined) {
			cachedStep.cached = true;
			return [{step: cachedStep, state: 'cached'}, ...this.#book.finish(cachedStep, 0)];
		}

		const done = doneLine.exec(line);
		const doneStep = done === null ? undefined : this.#vertices.get(done[1]!);
		return doneStep === undefined ? [] : this.#book.finish(doneStep, Math.round(Number(done![2]) * 1000));
	}

	marksStep(line: string): boolean {
		return vertexLine.test(line) || cachedLine.test(line) || doneLine.test(line);
	}

	/** BuildKit ends each vertex itself; one left open (a failed build) stays unfinished. */
	end(): StepChange[] {
		return [];
	}
}
