/**
 * How a build stops when its AbortSignal fires (a stop signal caught by the CLI): the reason it
 * ends with, and `abortable`, which stops waiting for host work that does not listen itself.
 */
import {UserError} from '../errors.js';

export const interrupted = (): UserError => new UserError('build interrupted', {hint: 'everything the build started was removed', exitCode: 130, code: 'E_INTERRUPTED'});

/** The reason `signal` was aborted with (the stop signal's UserError), else a generic one. */
export const abortReason = (signal: AbortSignal | undefined): unknown => (signal?.reason instanceof UserError ? signal.reason : interrupted());

/**
 * `work`, or the abort's reason as soon as `signal` aborts: a host step that does not listen to
 * the signal itself (a read of a layout, an unpack, an output stream) no longer holds the run.
 * What it leaves is removed by its own cleanup or by the exit cleanups.
 */
export const abortable = async <T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> => {
	if (signal === undefined) {
		return work;
	}

	if (signal.aborted) {
		work.catch(() => undefined);
		throw abortReason(signal);
	}

	let onAbort: (() => void) | undefined;
	const aborted = new Promise<never>((_resolve, reject) => {
		onAbort = () => reject(abortReason(signal));
		signal.addEventListener('abort', onAbort, {once: true});
	});
	try {
		return await Promise.race([work, aborted]);
	} finally {
		signal.removeEventListener('abort', onAbort!);
		work.catch(() => undefined);
	}
};
