/**
 * A simulator of Apple's `container` CLI (github.com/apple/container) for exobuild's tests on
 * Linux: the real grammar and output shapes (see GRAMMAR.md), containers really run through
 * exobuild's linux-userns sandbox. State: $CONTAINER_SIM_ROOT; version: $CONTAINER_SIM_VERSION.
 */
import fs from 'node:fs';
import {containerCommand} from './containers.js';
import {imageCommand} from './images.js';
import {run} from './run.js';
import {CliError, paths, simRoot, simVersion} from './state.js';
import {buildCommand, cliVersionLine, systemCommand} from './system.js';
import {volumeCommand} from './volumes.js';
import {runVm} from './vm.js';

const usage = 'OVERVIEW: A container platform for macOS (simulated)\n\nUSAGE: container [--debug] <subcommand>\n';

const dispatch = async (argv: readonly string[]): Promise<number> => {
	const args = argv[0] === '--debug' ? argv.slice(1) : argv;
	const [command, ...rest] = args;
	let output: string;
	switch (command) {
		case undefined:
		case '-h':
		case '--help':
		case 'help':
			output = usage;
			break;
		case '--version':
		case '-v':
			output = cliVersionLine();
			break;
		case 'run':
			return run(rest);
		case 'image':
		case 'i':
			output = await imageCommand(rest);
			break;
		case 'system':
		case 's':
			output = await systemCommand(rest);
			break;
		case 'volume':
		case 'v':
			output = await volumeCommand(rest);
			break;
		case 'build':
			output = await buildCommand(rest);
			break;
		default:
			output = await containerCommand(command, rest);
	}

	process.stdout.write(output);
	return 0;
};

const main = async (): Promise<number> => {
	const argv = process.argv.slice(2);
	if (argv[0] === '__vm') {
		await runVm(argv[1]!);
		return 0;
	}

	try {
		fs.mkdirSync(simRoot(), {recursive: true});
		fs.appendFileSync(paths.calls(), `${JSON.stringify({argv, version: simVersion(), pid: process.pid, time: new Date().toISOString()})}\n`);
		return await dispatch(argv);
	} catch (error) {
		if (error instanceof CliError) {
			if (error.stdout !== undefined) {
				process.stdout.write(error.stdout);
			}

			if (error.message !== '') {
				process.stderr.write(`Error: ${error.message}\n`);
			}

			return error.exitCode;
		}

		process.stderr.write(`Error: internalError: "${(error as Error).message}"\n`);
		return 1;
	}
};

process.exitCode = await main();
