/**
 * Work to undo when the process is told to stop (SIGINT, SIGTERM, SIGHUP, SIGQUIT) before the
 * code that started it gets to its own `finally`: partial outputs, temp folders. Each cleanup is
 * registered while its thing exists and unregistered once it is gone or in place.
 */
type Cleanup = () => Promise<void>;

const cleanups = new Set<Cleanup>();

/** Registers `cleanup`; the returned function unregisters it (without running it). */
export const addExitCleanup = (cleanup: Cleanup): (() => void) => {
	cleanups.add(cleanup);
	return () => {
		cleanups.delete(cleanup);
	};
};

/** Runs every registered cleanup once (in parallel, errors ignored), within `deadlineMs`. */
export const runExitCleanups = async (deadlineMs = 1500): Promise<void> => {
	const pending = [...cleanups];
	cleanups.clear();
	let timer: NodeJS.Timeout | undefined;
	await Promise.race([
		Promise.allSettled(pending.map(async cleanup => cleanup())),
		new Promise<void>(resolve => {
			timer = setTimeout(resolve, deadlineMs);
			timer.unref();
		}),
	]);
	clearTimeout(timer);
};
