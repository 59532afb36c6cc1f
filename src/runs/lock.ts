/**
 * A lock shared by exobuild processes: a folder with an owner record (./owned-dir.ts). Taking it
 * waits while a live process holds it; the lock of a process that died is broken.
 */
import fs from 'node:fs/promises';
import {setTimeout as sleep} from 'node:timers/promises';
import {createOwnedDir, ownerAlive, readOwner} from './owned-dir.js';

export const withLock = async <T>(lock: string, onWait: () => void, run: () => Promise<T>, signal?: AbortSignal): Promise<T> => {
	let waited = false;
	for (;;) {
		signal?.throwIfAborted();
		try {
			// eslint-disable-next-line no-await-in-loop
			const owned = await createOwnedDir(lock, 'lock');
			try {
				return await run();
			} finally {
				await owned.remove();
			}
		} catch (error) {
			if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
				throw error;
			}

			// eslint-disable-next-line no-await-in-loop
			const owner = await readOwner(lock);
			// eslint-disable-next-line no-await-in-loop
			if (owner !== undefined && !(await ownerAlive(owner))) {
				// eslint-disable-next-line no-await-in-loop
				await fs.rm(lock, {recursive: true, force: true});
				continue;
			}

			if (!waited) {
				onWait();
				waited = true;
			}

			// eslint-disable-next-line no-await-in-loop
			await sleep(500);
		}
	}
};
