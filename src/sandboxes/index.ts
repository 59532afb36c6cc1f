/** The factory of sandbox runtimes: the only place that maps a driver name to its implementation. */
import {UserError} from '../errors.js';
import {createLinuxUsernsRuntime} from './linux-userns/index.js';
import type {RuntimeName, SandboxRuntime} from './runtime.js';

export const runtimeNames: readonly RuntimeName[] = ['linux-userns', 'apple-container'];

/** The runtime used when --driver is not given. */
export const defaultRuntime = (platform: NodeJS.Platform = process.platform): RuntimeName =>
	platform === 'darwin' ? 'apple-container' : 'linux-userns';

export const createRuntime = (name: RuntimeName): SandboxRuntime => {
	switch (name) {
		case 'linux-userns': {
			return createLinuxUsernsRuntime();
		}

		case 'apple-container': {
			throw new UserError('the apple-container driver is not available in this version', {
				hint: 'on Linux use --driver linux-userns (the default); the macOS driver is being built',
				code: 'E_DRIVER',
			});
		}
	}
};
