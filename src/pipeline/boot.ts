/**
 * Boot: start the sandbox from the builder image with the build's mounts, as the `sandbox-start`
 * host phase. An abort while it starts stops waiting at once; the sandbox is then stopped as soon
 * as it is up. A started sandbox is registered as an exit cleanup (a backstop after a signal)
 * until it is stopped.
 */
import {addExitCleanup} from '../runs/exit-cleanups.js';
import type {Sandbox, SandboxDriver, SandboxSpec} from '../sandboxes/driver.js';
import type {HostPhases} from './host-phases.js';

/** A started sandbox and its one stop. */
export interface BootedSandbox {
	readonly sandbox: Sandbox;
	/** Whether a stop has completed (the sandbox is gone). */
	readonly stopped: boolean;
	/** Stops the sandbox; a call while a stop is under way waits for that one. A failed stop may be tried again. */
	stop(): Promise<void>;
}

export const bootSandbox = async (driver: Pick<SandboxDriver, 'start'>, spec: SandboxSpec, phases: Pick<HostPhases, 'run'>): Promise<BootedSandbox> => {
	const starting = driver.start(spec);
	let sandbox: Sandbox;
	try {
		sandbox = await phases.run('sandbox-start', async () => starting, box => box.id);
	} catch (error) {
		// An abort stopped waiting for the start: the sandbox is stopped once it is up.
		void starting.then(async box => box.stop(), () => undefined);
		throw error;
	}

	const started = sandbox;
	const forget = addExitCleanup(async () => started.stop());
	let stopping: Promise<void> | undefined;
	let stopped = false;
	return {
		sandbox: started,
		get stopped() {
			return stopped;
		},
		async stop() {
			stopping ??= started.stop().then(() => {
				stopped = true;
				forget();
			}, (error: unknown) => {
				stopping = undefined;
				throw error;
			});
			return stopping;
		},
	};
};
