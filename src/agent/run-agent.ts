/**
 * Running the agent in a started sandbox, for a build or for `doctor`'s prove: every stdout line
 * is checked against the event contract (./contract.ts) and handed on, stderr lines are handed on
 * too, and the run ends in one typed outcome. Nothing here knows which driver is in use.
 */
import type {Sandbox} from '../sandboxes/driver.js';
import {parseAgentLine, type AgentEvent, type AgentEventOf} from './contract.js';

export type AgentOutcome =
	/** The terminal `result` event came, and the agent exited 0. */
	| {readonly kind: 'succeeded'; readonly result: AgentEventOf<'result'> | undefined}
	/** The agent reported an error event (the first terminal one). */
	| {readonly kind: 'failed'; readonly error: AgentEventOf<'error'>; readonly exitCode: number | undefined}
	/** A stdout line that is not an event of the contract (the first one). */
	| {readonly kind: 'protocol-error'; readonly error: Error}
	/** The agent ended without a result or an error event. */
	| {readonly kind: 'crashed'; readonly exitCode: number | undefined; readonly signal: string | undefined; readonly lastStderr: string | undefined}
	/** The caller's signal aborted the run. */
	| {readonly kind: 'interrupted'};

export interface RunAgentOptions {
	readonly args: readonly string[];
	/** Written to the agent's stdin, then stdin is closed (the env= secrets block). */
	readonly stdin?: string;
	readonly signal?: AbortSignal;
	/** Each event, in order, as it arrives. */
	readonly onEvent?: (event: AgentEvent) => void;
	readonly onStderrLine?: (line: string) => void;
	/**
	 * `build` (default): success needs a `result` event and exit 0; any `error` event fails.
	 * `prove`: errors that carry a platform are per-platform results, not terminal; success is exit 0.
	 */
	readonly mode?: 'build' | 'prove';
}

export const runAgent = async (sandbox: Pick<Sandbox, 'runAgent'>, options: RunAgentOptions): Promise<AgentOutcome> => {
	const mode = options.mode ?? 'build';
	let result: AgentEventOf<'result'> | undefined;
	let failure: AgentEventOf<'error'> | undefined;
	let platformFailure: AgentEventOf<'error'> | undefined;
	let protocolError: Error | undefined;
	let lastStderr: string | undefined;
	const exit = await sandbox.runAgent({
		args: [...options.args],
		...(options.stdin === undefined ? {} : {stdin: options.stdin}),
		...(options.signal === undefined ? {} : {signal: options.signal}),
		onStdoutLine(line) {
			if (line.trim() === '') {
				return;
			}

			let event: AgentEvent;
			try {
				event = parseAgentLine(line);
			} catch (error) {
				protocolError ??= error as Error;
				return;
			}

			if (event.event === 'result') {
				result = event;
			} else if (event.event === 'error' && (mode === 'build' || event.platform === undefined)) {
				failure ??= event;
			} else if (event.event === 'error') {
				platformFailure ??= event;
			}

			options.onEvent?.(event);
		},
		onStderrLine(line) {
			if (line.trim() !== '') {
				lastStderr = line.trim();
			}

			options.onStderrLine?.(line);
		},
	});

	if (options.signal?.aborted) {
		return {kind: 'interrupted'};
	}

	if (failure !== undefined) {
		return {kind: 'failed', error: failure, exitCode: exit.exitCode};
	}

	if (protocolError !== undefined) {
		return {kind: 'protocol-error', error: protocolError};
	}

	if (exit.exitCode === 0 && (mode === 'prove' || result !== undefined)) {
		return {kind: 'succeeded', result};
	}

	// prove: a platform that could not be proven ends the run with exit 1 after the others.
	if (platformFailure !== undefined && exit.exitCode === 1) {
		return {kind: 'failed', error: platformFailure, exitCode: exit.exitCode};
	}

	return {kind: 'crashed', exitCode: exit.exitCode, signal: exit.signal, lastStderr};
};
