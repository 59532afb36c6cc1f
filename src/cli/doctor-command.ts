/**
 * `exobuild doctor [--driver D] [--platform P,…] [--json]`: checks the host, the builder image,
 * and each platform's handler in a real (throwaway) sandbox; prints a table with a fix under it,
 * or JSON. Exit 0 if no check failed, 1 otherwise (2 for bad arguments, as everywhere).
 */
import process from 'node:process';
import {Option, type Command} from 'commander';
import {runDoctor} from '../doctor/checks.js';
import {doctorExitCode, renderJson, renderTable} from '../doctor/render.js';
import {UserError} from '../errors.js';
import {parsePlatforms} from '../platforms/parse.js';
import {defaultRuntime, runtimeNames} from '../sandboxes/index.js';
import type {RuntimeName} from '../sandboxes/runtime.js';
import {collect} from './main.js';

const signalExitCodes = {SIGINT: 130, SIGTERM: 143, SIGHUP: 129} as const;

interface DoctorCliOptions {
	driver: RuntimeName;
	platform: string[];
	json?: boolean;
}

export const registerDoctorCommand = (program: Command): void => {
	program
		.command('doctor')
		.description('Check the host, the builder image, and each platform\'s emulator (proven in a throwaway sandbox)')
		.addOption(new Option('--driver <DRIVER>', 'sandbox runtime to check').choices(runtimeNames).default(defaultRuntime()))
		.addOption(new Option('--platform <P>', 'platform(s) to prove, comma list, repeatable (default: every platform the sandbox does not run natively)').argParser(collect).default([]))
		.option('--json', 'print {ok, checks: [{area, check, status, detail, fix}]} instead of the table')
		.action(async (options: DoctorCliOptions) => {
			const platforms = options.platform.length === 0 ? undefined : parsePlatforms(options.platform);
			const controller = new AbortController();
			let caught: keyof typeof signalExitCodes | undefined;
			const listeners = Object.keys(signalExitCodes).map(name => {
				const signal = name as keyof typeof signalExitCodes;
				const listener = (): void => {
					caught ??= signal;
					controller.abort();
				};

				process.on(signal, listener);
				return [signal, listener] as const;
			});

			try {
				const checks = await runDoctor({
					driver: options.driver,
					...(platforms === undefined ? {} : {platforms}),
					signal: controller.signal,
					onProgress(message) {
						if (!options.json && process.stderr.isTTY) {
							process.stderr.write(`doctor: ${message}\n`);
						}
					},
				});
				if (caught !== undefined) {
					throw new UserError(`doctor interrupted by ${caught}`, {hint: 'the sandbox it started was removed', exitCode: signalExitCodes[caught], code: 'E_INTERRUPTED'});
				}

				process.stdout.write(options.json ? renderJson(checks) : renderTable(checks));
				process.exitCode = doctorExitCode(checks);
			} finally {
				for (const [signal, listener] of listeners) {
					process.off(signal, listener);
				}
			}
		});
};
