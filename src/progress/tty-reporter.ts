/** listr2 progress for terminals: one line per phase, the latest engine line under the running one. */
import {Listr, ListrLogger, ProcessOutput, type ListrTask} from 'listr2';
import {buildPhases, type BuildReporter, type ProgressEvent} from './events.js';
import {describeAgentEvent, shownAgentEvent, type ReporterOptions} from './plain-reporter.js';

type Outcome = 'done' | 'skipped' | {failed: string};

/** Follows which phase the build is in; phase i is over once a later phase starts or the build ends. */
class PhaseTracker {
	#current = -1;
	readonly #started = new Set<number>();
	#end: {ok: boolean; message?: string} | undefined;
	readonly #listeners = new Set<() => void>();
	readonly #outputs = new Map<number, (line: string) => void>();
	readonly #titles = new Map<number, (suffix: string) => void>();

	start(index: number): void {
		this.#started.add(index);
		this.#current = Math.max(this.#current, index);
		this.#notify();
	}

	end(ok: boolean, message?: string): void {
		this.#end = message === undefined ? {ok} : {ok, message};
		this.#notify();
	}

	line(line: string): void {
		this.#outputs.get(this.#current)?.(line);
	}

	title(index: number, suffix: string): void {
		this.#titles.get(index)?.(suffix);
	}

	bind(index: number, output: (line: string) => void, title: (suffix: string) => void): void {
		this.#outputs.set(index, output);
		this.#titles.set(index, title);
	}

	async outcome(index: number): Promise<Outcome> {
		for (;;) {
			const result = this.#check(index);
			if (result !== undefined) {
				return result;
			}

			await new Promise<void>(resolve => {
				const listener = (): void => {
					this.#listeners.delete(listener);
					resolve();
				};

				this.#listeners.add(listener);
			});
		}
	}

	#check(index: number): Outcome | undefined {
		if (this.#current > index) {
			return this.#started.has(index) ? 'done' : 'skipped';
		}

		if (this.#end === undefined) {
			return undefined;
		}

		if (!this.#end.ok && this.#current === index) {
			return {failed: this.#end.message ?? 'failed'};
		}

		return this.#started.has(index) ? 'done' : 'skipped';
	}

	#notify(): void {
		for (const listener of [...this.#listeners]) {
			listener();
		}
	}
}

const indexOf = (phase: string): number => buildPhases.findIndex(p => p.name === phase);

export class TtyReporter implements BuildReporter {
	readonly #tracker = new PhaseTracker();
	readonly #run: Promise<unknown>;
	readonly #warnings: string[] = [];
	readonly #platforms = new Map<number, Set<string>>();
	readonly #steps = new Map<string, {done: number; cached: number}>();

	readonly #debug: boolean;
	#engine: string | undefined;

	constructor(options: ReporterOptions = {}) {
		this.#debug = options.debug ?? false;
		const tasks: ListrTask[] = buildPhases.map((phase, index) => ({
			title: phase.title,
			task: async (_context, task) => {
				this.#tracker.bind(index, line => {
					task.output = line;
				}, suffix => {
					task.title = `${phase.title} ${suffix}`;
				});
				const outcome = await this.#tracker.outcome(index);
				if (outcome === 'skipped') {
					task.skip(`${phase.title} (not needed)`);
				} else if (outcome !== 'done') {
					throw new Error(outcome.failed);
				}
			},
			rendererOptions: {outputBar: 1, persistentOutput: false},
		}));
		// Everything listr2 draws goes to stderr: stdout carries only the result (the digest, or the
		// archive itself with -o -), as tools such as mocker rely on.
		const logger = new ListrLogger({useIcons: true, processOutput: new ProcessOutput(process.stderr, process.stderr)});
		const list = new Listr(tasks, {
			concurrent: false,
			exitOnError: true,
			renderer: 'default',
			rendererOptions: {logger, collapseSubtasks: false, timer: {condition: true, field: (duration: number) => `${(duration / 1000).toFixed(1)}s`, format: () => (text: string) => text} as never},
			fallbackRendererOptions: {logger},
			registerSignalListeners: false,
		});
		this.#run = list.run().catch(() => undefined);
	}

	report(event: ProgressEvent): void {
		switch (event.kind) {
			case 'host-phase': {
				if (event.state === 'start') {
					this.#tracker.start(indexOf(event.phase));
				}

				if (event.detail) {
					this.#tracker.line(event.detail);
				}

				break;
			}

			case 'agent': {
				const agentEvent = event.event;
				if (agentEvent.event === 'hello') {
					this.#engine = agentEvent.engine;
				}

				if (!shownAgentEvent(agentEvent, this.#debug, this.#engine)) {
					break;
				}

				if (agentEvent.event === 'phase-start') {
					const index = indexOf(agentEvent.phase);
					this.#tracker.start(index);
					if (agentEvent.platform) {
						const seen = this.#platforms.get(index) ?? new Set<string>();
						seen.add(agentEvent.platform);
						this.#platforms.set(index, seen);
						this.#tracker.title(index, [...seen].join(', '));
					}
				} else if (agentEvent.event === 'error') {
					// The terminal error is shown by finish(); keep the line too.
					this.#tracker.line(describeAgentEvent(agentEvent) ?? '');
				} else {
					const line = describeAgentEvent(agentEvent);
					if (line !== undefined) {
						this.#tracker.line(line);
					}
				}

				break;
			}

			case 'agent-stderr': {
				this.#tracker.line(event.line);
				break;
			}

			case 'step': {
				// The build phase's title counts steps per platform; its output line is the current step.
				const counts = this.#steps.get(event.platform ?? '') ?? {done: 0, cached: 0};
				if (event.state === 'done') {
					counts.done++;
					counts.cached += event.cached ? 1 : 0;
				}

				this.#steps.set(event.platform ?? '', counts);
				const build = indexOf('build');
				this.#tracker.title(build, [...this.#steps].map(([platform, {done, cached}]) => `${platform || 'steps'}: ${done} done${cached > 0 ? `, ${cached} cached` : ''}`).join('; '));
				this.#tracker.line(`${event.name}${event.cached ? ' CACHED' : event.state === 'done' ? ` DONE ${((event.ms ?? 0) / 1000).toFixed(1)}s` : ''}`);
				break;
			}

			case 'warning': {
				this.#warnings.push(event.message);
				break;
			}
		}
	}

	async finish({ok}: {ok: boolean}): Promise<void> {
		this.#tracker.end(ok, ok ? undefined : 'failed');
		await this.#run;
		for (const warning of this.#warnings) {
			process.stderr.write(`WARNING: ${warning}\n`);
		}
	}
}
