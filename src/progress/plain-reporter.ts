/** Line-per-event progress for logs and non-TTY output (stderr). */
import type {AgentEvent} from '../agent/contract.js';
import {buildPhases, type BuildReporter, type ProgressEvent} from './events.js';

const titleOf = (phase: string): string => buildPhases.find(p => p.name === phase)?.title ?? phase;
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;

export const describeAgentEvent = (event: AgentEvent): string | undefined => {
	switch (event.event) {
		case 'hello': {
			return `agent ${event.agentVersion} on ${event.machine} (kernel ${event.kernel}), engine ${event.engine}`;
		}

		case 'phase-start': {
			return `${titleOf(event.phase)}${event.platform ? ` ${event.platform}` : ''}`;
		}

		case 'phase-end': {
			return `${titleOf(event.phase)}${event.platform ? ` ${event.platform}` : ''}: ${event.ok ? 'done' : 'FAILED'} in ${seconds(event.ms)}`;
		}

		case 'handler': {
			return event.mode === 'native'
				? `${event.platform}: native (uname -m: ${event.proof})`
				: `${event.platform}: ${event.handler} → ${event.emulator} [${event.flags}] (${event.emulatorVersion}), registered by ${event.registeredBy}, proof: uname -m = ${event.proof}`;
		}

		case 'engine': {
			return `${event.engine} ${event.version}; platforms: ${event.platforms.join(', ')}`;
		}

		case 'log': {
			return `${event.source === 'daemon' ? 'daemon: ' : ''}${event.platform ? `[${event.platform}] ` : ''}${event.line}`;
		}

		case 'result': {
			return `built ${event.platforms.join(', ')} with ${event.engine}: ${event.digest}`;
		}

		case 'query': {
			return `query ${event.index}: exit ${event.exitCode}`;
		}

		case 'error': {
			return `error ${event.code}${event.platform ? ` (${event.platform})` : ''}: ${event.message}`;
		}
	}
};

/**
 * buildctl's own logrus lines (`time="…" level=warning msg="failed check for fsverity support"`
 * from the containerd content store it opens for an OCI folder export; `level=error
 * msg="(*service).Write failed" … locked … unavailable` when two exports of one layer race, which
 * the store retries): diagnostics of the client, not build output, shown with --debug only. A
 * failed build is reported by buildctl's exit and its final `error:` line, which are not logrus
 * lines. buildctl has no option to quiet them (cmd/buildctl/main.go at v0.32.2 has --debug and
 * --log-format only).
 */
const buildctlDiagnostic = /^time="[^"]*" level=[a-z]+ msg=/;

/**
 * Whether plain and TTY progress show an agent event: the engine daemon's log, and BuildKit
 * client diagnostics, only with --debug.
 */
export const shownAgentEvent = (event: AgentEvent, debug: boolean, engine?: string): boolean =>
	debug || event.event !== 'log' || (event.source !== 'daemon' && !(engine === 'buildkit' && event.source === 'engine' && buildctlDiagnostic.test(event.line)));

export interface ReporterOptions {
	/** exobuild --debug: also the engine daemon's own log lines. */
	readonly debug?: boolean;
}

export class PlainReporter implements BuildReporter {
	readonly #write: (line: string) => void;
	readonly #started = Date.now();
	readonly #debug: boolean;
	/**
	 * BuildKit's plain progress is docker's plain style already (`#5 [linux/ppc64le 2/3] RUN …`,
	 * `#5 DONE 0.3s`): printing the steps read from it as well printed every step line twice.
	 */
	#engineWritesSteps = false;
	#engine: string | undefined;

	constructor(write: (line: string) => void = line => process.stderr.write(`${line}\n`), options: ReporterOptions = {}) {
		this.#write = write;
		this.#debug = options.debug ?? false;
	}

	report(event: ProgressEvent): void {
		const at = `#${seconds(Date.now() - this.#started).padStart(6)}`;
		switch (event.kind) {
			case 'host-phase': {
				this.#write(`${at} ${titleOf(event.phase)}${event.state === 'end' ? `: done in ${seconds(event.ms ?? 0)}` : ''}${event.detail ? ` (${event.detail})` : ''}`);
				break;
			}

			case 'agent': {
				if (event.event.event === 'hello') {
					this.#engine = event.event.engine;
					this.#engineWritesSteps = event.event.engine === 'buildkit';
				}

				if (!shownAgentEvent(event.event, this.#debug, this.#engine)) {
					break;
				}

				const line = describeAgentEvent(event.event);
				if (line !== undefined) {
					this.#write(`${at} ${line}`);
				}

				break;
			}

			case 'agent-stderr': {
				this.#write(`${at} agent: ${event.line}`);
				break;
			}

			case 'step': {
				if (this.#engineWritesSteps) {
					break;
				}

				// docker build's plain style: the step, then CACHED or DONE with its time.
				if (event.state === 'start') {
					this.#write(`#${event.id} ${event.name}`);
				} else if (event.state === 'cached') {
					this.#write(`#${event.id} CACHED`);
				} else if (!event.cached) {
					this.#write(`#${event.id} DONE ${seconds(event.ms ?? 0)}`);
				}

				break;
			}

			case 'warning': {
				this.#write(`WARNING: ${event.message}`);
				break;
			}
		}
	}

	async finish(): Promise<void> {}
}
