import type {BuildReporter} from './events.js';
import {PlainReporter, type ReporterOptions} from './plain-reporter.js';
import {QuietReporter, RawJsonReporter} from './quiet-reporters.js';

/**
 * auto: listr2 on a TTY (and not in CI), plain lines otherwise; quiet: nothing; rawjson: the
 * engine's JSON progress only. listr2 is loaded only when used. With `debug` (exobuild --debug)
 * plain and TTY progress also show the engine daemon's own log.
 */
export const createReporter = async (mode: 'auto' | 'plain' | 'tty' | 'quiet' | 'rawjson', stream: NodeJS.WriteStream = process.stderr, options: ReporterOptions = {}): Promise<BuildReporter> => {
	if (mode === 'quiet') {
		return new QuietReporter();
	}

	if (mode === 'rawjson') {
		return new RawJsonReporter();
	}

	const tty = mode === 'tty' || (mode === 'auto' && stream.isTTY === true && !process.env['CI']);
	if (!tty) {
		return new PlainReporter(undefined, options);
	}

	const {TtyReporter} = await import('./tty-reporter.js');
	return new TtyReporter(options);
};
