/**
 * `exobuild doctor [--driver D] [--platform P,…] [--json]`: checks the host, the builder image,
 * and each platform's handler in a real (throwaway) sandbox; prints a table with a fix under it,
 * or JSON. Exit 0 if no check failed, 1 otherwise (2 for bad arguments, as everywhere).
 */
import process from 'node:process';
import {Option, type Command} from 'commander';
import {runDoctor} from '../doctor/checks.js';
import {doctorExitCode, renderJson, renderTable} from '../doctor/render.js';
import {interruptedBy} from '../errors.js';
import {parsePlatforms} from '../platforms/parse.js';
import {defaultDriver, driverNames} from '../sandboxes/index.js';
import type {DriverName} from '../sandboxes/driver.js';
import {collect} from './main.js';
import {watchStopSignals} from './stop-signals.js';

interface DoctorCliOptions {
	driver: DriverName;
	platform: string[];
	json?: boolean;
}

export const registerDoctorCommand = (program: Command): void => {
	program
		.command('doctor')
		.description('Check the host, the builder image, and each platform\'s emulator (proven in a throwaway sandbox)')
		.addOption(new Option('--driver <DRIVER>', 'sandbox driver to check').choices(driverNames).default(defaultDriver()))
		.addOption(new Option('--platform <P>', 'platform(s) to prove, comma list, repeatable (default: every platform the sandbox does not run natively)').argParser(collect).default([]))
		.option('--json', 'print {ok, checks: [{area, check, status, detail, fix}]} instead of the table')
		.action(async (options: DoctorCliOptions) => {
			const platforms = options.platform.length === 0 ? undefined : parsePlatforms(options.platform);
			const stop = watchStopSignals('doctor');
			let checks: Awaited<ReturnType<typeof runDoctor>>;
			try {
				checks = await runDoctor({
					driver: options.driver,
					...(platforms === undefined ? {} : {platforms}),
					signal: stop.signal,
					onProgress(message) {
						if (!options.json && process.stderr.isTTY) {
							process.stderr.write(`doctor: ${message}\n`);
						}
					},
				});
			} catch (error) {
				const caught = stop.caught();
				throw caught === undefined ? error : interruptedBy(caught, 'doctor', error);
			} finally {
				stop.end();
			}

			const caught = stop.caught();
			if (caught !== undefined) {
				throw interruptedBy(caught, 'doctor');
			}

			process.stdout.write(options.json ? renderJson(checks) : renderTable(checks));
			process.exitCode = doctorExitCode(checks);
		});
};
