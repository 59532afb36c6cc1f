/**
 * Merging a complete tree into an existing folder as buildx's local exporter writes: every path
 * the tree has replaces the same path in the folder, nothing else there is removed. A path in
 * the folder is never followed: a symlink (or a file, or a folder where the tree has a file) is
 * removed first; a real folder where the tree has a folder is merged into and takes the tree's
 * mode and times. Entries are moved with rename, so both must be on the same filesystem.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {lstatOrUndefined} from '../oci/in-root.js';
import {removeTree} from '../fs/remove-tree.js';

export interface MergeOptions {
	/** Also give merged-into folders the tree's owners (keep-owners=true). */
	readonly keepOwners?: boolean;
	readonly signal?: AbortSignal;
}

/** Moves the entries of the real folder `from` into the real folder `into`. */
export const mergeTree = async (from: string, into: string, options: MergeOptions = {}): Promise<void> => {
	for (const name of await fs.readdir(from)) {
		options.signal?.throwIfAborted();
		const source = path.join(from, name);
		const target = path.join(into, name);
		const sourceStat = await fs.lstat(source);
		const targetStat = await lstatOrUndefined(target);
		if (sourceStat.isDirectory() && targetStat?.isDirectory()) {
			await mergeTree(source, target, options);
			if (options.keepOwners) {
				await fs.lchown(target, sourceStat.uid, sourceStat.gid);
			}

			await fs.chmod(target, sourceStat.mode & 0o7777);
			await fs.utimes(target, sourceStat.atime, sourceStat.mtime);
			continue;
		}

		if (targetStat !== undefined) {
			await (targetStat.isDirectory() ? removeTree(target) : fs.unlink(target));
		}

		await fs.rename(source, target);
	}
};
