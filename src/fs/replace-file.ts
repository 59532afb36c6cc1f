/**
 * Replacing a small file whole: its content goes into a new partial file beside it (O_EXCL, so
 * never through a symlink planted there), is synced, then renamed over the file. A reader sees
 * the old file or the new one, never a half; a failure removes the partial file and leaves the
 * old one. The caller checks the folder and what is at `file` first.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

export const replaceFile = async (file: string, content: string, mode = 0o600): Promise<void> => {
	const partial = path.join(path.dirname(file), `.${path.basename(file)}.${crypto.randomBytes(4).toString('hex')}.partial`);
	try {
		const handle = await fs.open(partial, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
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
