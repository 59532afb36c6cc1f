/**
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT during a command: each aborts the command's AbortSignal,
 * so every phase stops and removes what it started, and the run ends with 128 + the signal's
 * number. A backstop guarantees the end: if the run has not ended `backstopMs` after the signal
 * (a phase that does not listen to the signal, a stream stuck on a slow reader), the exit
 * cleanups run (partial outputs, unpack folders: src/runs/exit-cleanups.ts) and the process
 * exits with the signal's code. A second signal changes nothing: the cleanup goes on.
 */
import process from 'node:process';
import {interruptedBy, signalExitCodes, stopSignals, type StopSignal} from '../errors.js';
import {runExitCleanups} from '../runs/exit-cleanups.js';

export interface StopScope {
	readonly signal: AbortSignal;
	/** The first stop signal received, if any. */
	caught(): StopSignal | undefined;
	/** The command ended (its error, if any, is printed by main): signals go back to their defaults unless one was caught. */
	end(): void;
}

/** Two seconds is the promise: the backstop leaves 0.8 s for the cleanups (0.5 s at most) and the exit. */
export const defaultBackstopMs = 1200;

export const watchStopSignals = (what: string, backstopMs = defaultBackstopMs): StopScope => {
	const controller = new AbortController();
	let caught: StopSignal | undefined;
	let ended = false;
	const backstop = async (signal: StopSignal): Promise<void> => {
		await runExitCleanups(500);
		if (!ended) {
			const error = interruptedBy(signal, what);
			process.stderr.write(`exobuild: ${error.message}\nhint: ${error.hint ?? ''}\n`);
		}

		process.exit(signalExitCodes[signal]);
	};

	const onSignal = (signal: StopSignal): void => {
		if (caught !== undefined) {
			return; // the first one's teardown is under way: a second Ctrl-C must not cut it short
		}

		caught = signal;
		controller.abort(interruptedBy(signal, what));
		// Unref'd: a run that ends in time exits on its own; one that is stuck is ended here.
		setTimeout(() => void backstop(signal), backstopMs).unref();
	};

	const listeners = stopSignals.map(signal => {
		const listener = (): void => onSignal(signal);
		process.on(signal, listener);
		return [signal, listener] as const;
	});

	return {
		signal: controller.signal,
		caught: () => caught,
		end() {
			ended = true;
			if (caught === undefined) {
				for (const [signal, listener] of listeners) {
					process.off(signal, listener);
				}
			}
		},
	};
};
