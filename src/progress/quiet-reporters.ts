/** Progress that shows nothing (`-q`, `--progress quiet`), or only the engine's own JSON (`--progress rawjson`). */
import type {BuildReporter, ProgressEvent} from './events.js';

export class QuietReporter implements BuildReporter {
	report(_event: ProgressEvent): void {}
	async finish(): Promise<void> {}
}

/** Passes BuildKit's SolveStatus lines (JSON objects) through to stderr, one per line, and nothing else. */
export class RawJsonReporter implements BuildReporter {
	readonly #write: (line: string) => void;

	constructor(write: (line: string) => void = line => process.stderr.write(`${line}\n`)) {
		this.#write = write;
	}

	report(event: ProgressEvent): void {
		if (event.kind === 'agent' && event.event.event === 'log' && event.event.source === 'engine' && event.event.line.startsWith('{')) {
			this.#write(event.event.line);
		}
	}

	async finish(): Promise<void> {}
}
