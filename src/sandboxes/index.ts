/** The factory of sandbox drivers: the only place that maps a driver name to its implementation. */
import {createAppleContainerDriver} from './apple-container/index.js';
import {createLinuxUsernsDriver} from './linux-userns/index.js';
import type {DriverName, DriverOptions, SandboxDriver} from './driver.js';

export const driverNames: readonly DriverName[] = ['linux-userns', 'apple-container'];

/** The driver used when --driver is not given. */
export const defaultDriver = (platform: NodeJS.Platform = process.platform): DriverName =>
	platform === 'darwin' ? 'apple-container' : 'linux-userns';

export const createDriver = (name: DriverName, options: DriverOptions = {}): SandboxDriver => {
	switch (name) {
		case 'linux-userns': {
			return createLinuxUsernsDriver(options);
		}

		case 'apple-container': {
			return createAppleContainerDriver(options);
		}
	}
};
