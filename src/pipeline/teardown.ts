/**
 * Tear down: the sandbox is destroyed with everything it created, before the outputs are
 * written (they read only the host folder it exported to). After a successful agent run this is
 * the `teardown` host phase; on any failure it runs from the build's `finally`, reported but not
 * through the phase runner, which refuses to start a phase after an abort.
 */
import type {BuildReporter} from '../progress/events.js';
import type {BootedSandbox} from './boot.js';
import type {HostPhases} from './host-phases.js';

/** The teardown after the agent succeeded: a timed host phase. */
export const tearDown = async (booted: BootedSandbox, phases: Pick<HostPhases, 'run'>): Promise<void> => {
	await phases.run('teardown', async () => booted.stop());
};

/** The teardown in `finally`: stops a sandbox that is still up (or waits for a stop under way). Never refused after an abort. */
export const tearDownRemaining = async (booted: BootedSandbox | undefined, reporter: BuildReporter): Promise<void> => {
	if (booted === undefined || booted.stopped) {
		return;
	}

	reporter.report({kind: 'host-phase', phase: 'teardown', state: 'start'});
	await booted.stop();
	reporter.report({kind: 'host-phase', phase: 'teardown', state: 'end'});
};
