/**
 * Writing a file of exobuild's cache: into a partial file beside it (recorded, so a killed run's
 * partial is reaped), then renamed into place. A symlink or anything else at the destination is
 * replaced, never written through.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {ensureCacheFolder} from './cache-guard.js';
import {partialPathOf, trackPartial} from './partials.js';

/**
 * Writes `file` through a partial beside it. `write` may name another destination in the same
 * folder, for a file whose name is known only once it is written (a verified archive).
 */
export const writeCacheFile = async (file: string, write: (partial: string) => Promise<string | void>): Promise<void> => {
	await ensureCacheFolder(path.dirname(file));
	const tracked = await trackPartial(partialPathOf(file));
	try {
		const named = await write(tracked.path);
		const destination = typeof named === 'string' ? named : file;
		if (path.dirname(destination) !== path.dirname(file)) {
			throw new Error(`internal: ${destination} is not beside ${file}`);
		}

		const handle = await fs.open(tracked.path, 'r');
		try {
			await handle.sync();
		} finally {
			await handle.close();
		}

		await fs.rename(tracked.path, destination);
	} catch (error) {
		await tracked.discard();
		throw error;
	}

	await tracked.release();
};

export const writeCacheJson = async (file: string, value: unknown): Promise<void> => {
	await writeCacheFile(file, async partial => fs.writeFile(partial, `${JSON.stringify(value, undefined, 2)}\n`, {mode: 0o600, flag: 'wx'}));
};
