/**
 * Writing a small file of exobuild's cache (a record): into a partial file beside it, then
 * renamed into place. A symlink or anything else at the destination is replaced, never written
 * through. Large files (archives) are written in an owned scratch folder of the same filesystem
 * and renamed into place, so a killed run's half-written copy is reaped with its folder.
 */
import path from 'node:path';
import {replaceFile} from '../fs/replace-file.js';
import {ensureCacheFolder} from './cache-guard.js';

export const writeCacheFile = async (file: string, content: string): Promise<void> => {
	await ensureCacheFolder(path.dirname(file));
	await replaceFile(file, content);
};

export const writeCacheJson = async (file: string, value: unknown): Promise<void> => {
	await writeCacheFile(file, `${JSON.stringify(value, undefined, 2)}\n`);
};
