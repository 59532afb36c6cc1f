/**
 * exobuild's command line. Parsing is commander's; every command validates its input into a
 * typed request before anything starts. Errors a user can cause are printed as one line with a
 * hint (a stack trace only with --debug), and set a non-zero exit code.
 */
import {exobuildVersion} from '../agent/agent-version.js';
import {Command, CommanderError, Option} from 'commander';
import {exitCodes, userErrorOf} from '../errors.js';
import {supportedPlatformIds} from '../platforms/parse.js';
import {registerBuildCommand} from './build-command.js';
import {registerBuilderCommand} from './builder-command.js';
import {registerDoctorCommand} from './doctor-command.js';
import {registerNodeCommand} from './node-command.js';
import {registerPruneCommand} from './prune-command.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];
export {collect};

export const createProgram = (): Command => {
	const program = new Command('exobuild')
		.description('Build container images for foreign CPU architectures in a throwaway sandbox with its own QEMU emulators.')
		.version(exobuildVersion)
		.addOption(new Option('--debug', 'print stack traces of errors, and the engine daemon log as it runs'))
		.showSuggestionAfterError(true)
		.configureOutput({outputError: () => undefined})
		.exitOverride();
	program.addHelpText('after', `\nSupported platforms: ${supportedPlatformIds().join(', ')}`);
	registerBuildCommand(program);
	registerBuilderCommand(program);
	registerPruneCommand(program);
	registerDoctorCommand(program);
	registerNodeCommand(program);
	return program;
};

/** Messages are one line: a multi-line one (a tool's output, a schema report) is joined. */
const oneLine = (text: string): string => text.split('\n').map(line => line.trim()).filter(Boolean).join(' ');

const printError = (error: unknown, debug: boolean): number => {
	if (error instanceof CommanderError) {
		if (error.exitCode === 0) {
			return 0; // --help, --version
		}

		const message = error.message.replace(/^error: /, '');
		process.stderr.write(`exobuild: ${message}\nhint: run \`exobuild ${process.argv[2] && !process.argv[2].startsWith('-') ? `${process.argv[2]} ` : ''}--help\` for the options\n`);
		return 2;
	}

	// A UserError, or an error of the user's world (a full disk, a path they may not write, a
	// schema violation) made into one: a line and a hint, no dump.
	const known = userErrorOf(error);
	if (known !== undefined) {
		process.stderr.write(`exobuild: ${oneLine(known.message)}\n${known.hint ? `hint: ${oneLine(known.hint)}\n` : ''}`);
		if (debug) {
			process.stderr.write(`${known.stack ?? ''}\n${known.cause ? `cause: ${String((known.cause as Error).stack ?? known.cause)}\n` : ''}`);
		}

		return known.exitCode;
	}

	const text = error instanceof Error ? error.message : String(error);
	process.stderr.write(`exobuild: internal error: ${oneLine(text)}\nhint: this is a bug; run again with --debug and report the output\n`);
	if (debug && error instanceof Error) {
		process.stderr.write(`${error.stack ?? ''}\n`);
	}

	return exitCodes.bug;
};

export const main = async (argv: string[] = process.argv): Promise<number> => {
	const program = createProgram();
	const debug = argv.includes('--debug');
	try {
		await program.parseAsync(argv);
		return typeof process.exitCode === 'number' ? process.exitCode : 0;
	} catch (error) {
		return printError(error, debug);
	}
};
