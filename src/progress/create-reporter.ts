import type {BuildReporter} from './events.js';
import {PlainReporter} from './plain-reporter.js';
import {TtyReporter} from './tty-reporter.js';

/** auto: listr2 on a TTY (and not in CI), plain lines otherwise. */
export const createReporter = (mode: 'auto' | 'plain' | 'tty', stream: NodeJS.WriteStream = process.stderr): BuildReporter => {
	const tty = mode === 'tty' || (mode === 'auto' && stream.isTTY === true && !process.env['CI']);
	return tty ? new TtyReporter() : new PlainReporter();
};
