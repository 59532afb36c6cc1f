/** The factory of sandbox runtimes: the only place that maps a driver name to its implementation. */
import {createAppleContainerRuntime} from './apple-container/index.js';
import {createLinuxUsernsRuntime} from './linux-userns/index.js';
import type {RuntimeName, RuntimeOptions, SandboxRuntime} from './runtime.js';

export const runtimeNames: readonly RuntimeName[] = ['linux-userns', 'apple-container'];

/** The runtime used when --driver is not given. */
export const defaultRuntime = (platform: NodeJS.Platform = process.platform): RuntimeName =>
	platform === 'darwin' ? 'apple-container' : 'linux-userns';

export const createRuntime = (name: RuntimeName, options: RuntimeOptions = {}): SandboxRuntime => {
	switch (name) {
		case 'linux-userns': {
			return createLinuxUsernsRuntime(options);
		}

		case 'apple-container': {
			return createAppleContainerRuntime(options);
		}
	}
};
