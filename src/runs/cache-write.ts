/**
 * Writing a small file of exobuild's cache (a record): into a partial file beside it, then
 * renamed into place. A symlink or anything else at the destination is replaced, never written
 * through. Large files (archives) are written in an owned scratch folder of the same filesystem
 * and renamed into place, so a killed run's half-written copy is reaped with its folder.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {ensureCacheFolder} from './cache-guard.js';

export const writeCacheFile = async (file: string, content: string): Promise<void> => {
	await ensureCacheFolder(path.dirname(file));
	const partial = path.join(path.dirname(file), `.${path.basename(file)}.${crypto.randomBytes(4).toString('hex')}.partial`);
	try {
		const handle = await fs.open(partial, 'wx', 0o600);
		try {
			await handle.writeFile(content);
			await handle.sync();
		} finally {
			await handle.close();
		}

		await fs.rename(partial, file);
	} catch (error) {
		await fs.rm(partial, {force: true});
		throw error;
	}
};

export const writeCacheJson = async (file: string, value: unknown): Promise<void> => {
	await writeCacheFile(file, `${JSON.stringify(value, undefined, 2)}\n`);
};
