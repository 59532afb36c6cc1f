import type {BuildReporter} from './events.js';
import {PlainReporter} from './plain-reporter.js';

/** auto: listr2 on a TTY (and not in CI), plain lines otherwise. listr2 is loaded only when used. */
export const createReporter = async (mode: 'auto' | 'plain' | 'tty', stream: NodeJS.WriteStream = process.stderr): Promise<BuildReporter> => {
	const tty = mode === 'tty' || (mode === 'auto' && stream.isTTY === true && !process.env['CI']);
	if (!tty) {
		return new PlainReporter();
	}

	const {TtyReporter} = await import('./tty-reporter.js');
	return new TtyReporter();
};
