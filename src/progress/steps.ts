/**
 * Build steps read from the engine's output, so that progress can show `[linux/ppc64le 2/4] RUN …`,
 * mark cached steps and time each one, whatever the engine:
 * - buildah: `[1/2] STEP 2/4: RUN …` (the stage prefix only in multi-stage builds), then
 *   `--> Using cache <id>` when the step was cached; the next STEP, COMMIT or the end closes it;
 * - BuildKit (`--progress plain`): `#5 [linux/ppc64le 2/4] RUN …`, `#5 CACHED`, `#5 DONE 0.3s`.
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

const buildahStep = /^(?:\[(\d+)\/(\d+)\] )?STEP (\d+)\/(\d+): (.*)$/;
const buildkitVertex = /^#(\d+) \[([^\]]+)\] (.*)$/;
const buildkitCached = /^#(\d+) CACHED$/;
const buildkitDone = /^#(\d+) DONE (\d+(?:\.\d+)?)s$/;

export class StepTracker {
	readonly steps: Step[] = [];
	/** The open buildah step of each platform. */
	readonly #open = new Map<string, Step>();
	/** BuildKit vertices by their number. */
	readonly #vertices = new Map<string, Step>();
	readonly #now: () => number;

	constructor(now: () => number = () => performance.now()) {
		this.#now = now;
	}

	/** Feeds one engine log line; returns what it changed. */
	onLine(platform: string | undefined, line: string): StepChange[] {
		const changes: StepChange[] = [];
		const key = platform ?? '';
		const buildah = buildahStep.exec(line);
		if (buildah !== null) {
			changes.push(...this.#close(key));
			const [, stage, stages, index, total, instruction] = buildah;
			const where = [platform, stage !== undefined && stages !== '1' ? `stage ${stage}` : undefined].filter(Boolean).join(' ');
			const step = this.#add(`[${where ? `${where} ` : ''}${index}/${total}] ${instruction}`, platform);
			this.#open.set(key, step);
			changes.push({step, state: 'start'});
			return changes;
		}

		if (line.startsWith('--> Using cache ')) {
			const step = this.#open.get(key);
			if (step !== undefined && !step.cached) {
				step.cached = true;
				changes.push({step, state: 'cached'});
			}

			return changes;
		}

		if (line.startsWith('COMMIT ')) {
			return this.#close(key);
		}

		const vertex = buildkitVertex.exec(line);
		if (vertex !== null && !this.#vertices.has(vertex[1]!)) {
			const [, id, where, instruction] = vertex;
			const step = this.#add(`[${where}] ${instruction}`, where!.startsWith('linux/') ? where!.split(' ')[0] : platform);
			this.#vertices.set(id!, step);
			changes.push({step, state: 'start'});
			return changes;
		}

		const cached = buildkitCached.exec(line);
		const cachedStep = cached === null ? undefined : this.#vertices.get(cached[1]!);
		if (cachedStep !== undefined) {
			cachedStep.cached = true;
			changes.push({step: cachedStep, state: 'cached'}, ...this.#finish(cachedStep, 0));
			return changes;
		}

		const done = buildkitDone.exec(line);
		const doneStep = done === null ? undefined : this.#vertices.get(done[1]!);
		if (doneStep !== undefined && !doneStep.done) {
			changes.push(...this.#finish(doneStep, Math.round(Number(done![2]) * 1000)));
		}

		return changes;
	}

	/** Closes every open step (the engine finished). */
	end(): StepChange[] {
		return [...this.#open.keys()].flatMap(key => this.#close(key));
	}

	#add(name: string, platform: string | undefined): Step {
		const step: Step = {name, platform, cached: false, done: false, startedAt: this.#now(), ms: undefined};
		this.steps.push(step);
		return step;
	}

	#close(key: string): StepChange[] {
		const step = this.#open.get(key);
		this.#open.delete(key);
		return step === undefined ? [] : this.#finish(step, Math.round(this.#now() - step.startedAt));
	}

	#finish(step: Step, ms: number): StepChange[] {
		if (step.done) {
			return [];
		}

		step.done = true;
		step.ms = ms;
		return [{step, state: 'done'}];
	}
}
