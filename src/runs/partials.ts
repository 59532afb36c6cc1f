/**
 * Partial outputs: a file or folder written beside its destination (same filesystem) and renamed
 * into place once complete. Each is recorded twice while it exists: in memory, so a signal
 * removes it (./exit-cleanups.ts), and on disk in an owned folder of the runs directory
 * (`<pid>-<random>.partials/`), so that after a SIGKILL the next run, or `prune`, removes it.
 * A record only ever names a path shaped like a partial (`.NAME.<8 hex>.partial`), and such a
 * path is removed without following a symlink.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {runsDir} from '../paths.js';
import {addExitCleanup} from './exit-cleanups.js';
import {createOwnedDir, ownerAlive, readOwner, type OwnedDir} from './owned-dir.js';
import {removeTree} from '../fs/remove-tree.js';

const recordSuffix = '.partials';
const partialPattern = /^\..+\.[\da-f]{8}\.partial$/;

/** The partial path of `dest`: `.BASENAME.<8 hex>.partial` in the same folder. */
export const partialPathOf = (dest: string): string =>
	path.join(path.dirname(path.resolve(dest)), `.${path.basename(dest)}.${crypto.randomBytes(4).toString('hex')}.partial`);

let records: Promise<OwnedDir> | undefined;
/** Partials tracked now, or being tracked: the records folder goes when the last one is released. */
let live = 0;
const recordsDir = async (): Promise<OwnedDir> => {
	records ??= createOwnedDir(path.join(runsDir(), `${process.pid}-${crypto.randomBytes(4).toString('hex')}${recordSuffix}`), 'partials');
	return records;
};

const leave = async (): Promise<void> => {
	live--;
	if (live === 0 && records !== undefined) {
		const done = records;
		records = undefined;
		await (await done.catch(() => undefined))?.remove();
	}
};

/** A path's lstat, or undefined when it does not exist. */
const lstatOrUndefined = async (file: string) => fs.lstat(file).catch(() => undefined);

/** Removes a partial file or folder (a symlink is removed as itself, never followed). */
const removePartial = async (partial: string): Promise<void> => {
	const stat = await lstatOrUndefined(partial);
	if (stat === undefined) {
		return;
	}

	await (stat.isDirectory() ? removeTree(partial) : fs.rm(partial, {force: true}));
};

export interface TrackedPartial {
	readonly path: string;
	/** The partial is gone or renamed into place: forget it (it is not removed). */
	release(): Promise<void>;
	/** Removes the partial and forgets it. */
	discard(): Promise<void>;
}

/** Records `partial` (which must be named by partialPathOf) before it is created. */
export const trackPartial = async (partial: string): Promise<TrackedPartial> => {
	if (!partialPattern.test(path.basename(partial))) {
		throw new Error(`internal: ${partial} is not named like a partial output`);
	}

	live++;
	let record: string;
	try {
		const owned = await recordsDir();
		record = path.join(owned.path, crypto.createHash('sha256').update(partial).digest('hex').slice(0, 16));
		await fs.writeFile(record, partial, {mode: 0o600});
	} catch (error) {
		await leave();
		throw error;
	}

	const unregister = addExitCleanup(async () => removePartial(partial));
	let released = false;
	const release = async (): Promise<void> => {
		unregister();
		if (!released) {
			released = true;
			await fs.rm(record, {force: true});
			await leave();
		}
	};

	return {
		path: partial,
		release,
		async discard() {
			await removePartial(partial);
			await release();
		},
	};
};

/** Removes the partial outputs recorded by runs that are gone (killed hard), and their records. */
export const reapPartials = async (): Promise<string[]> => {
	const parent = runsDir();
	const names = await fs.readdir(parent).catch(() => [] as string[]);
	const removed: string[] = [];
	for (const name of names.filter(entry => entry.endsWith(recordSuffix))) {
		const dir = path.join(parent, name);
		const owner = await readOwner(dir);
		const stat = await lstatOrUndefined(dir);
		const dead = stat?.isDirectory() === true && (owner === undefined ? Date.now() - stat.mtimeMs > 60_000 : !(await ownerAlive(owner)));
		if (!dead) {
			continue;
		}

		for (const entry of await fs.readdir(dir).catch(() => [] as string[])) {
			if (!/^[\da-f]{16}$/.test(entry)) {
				continue;
			}

			const target = await fs.readFile(path.join(dir, entry), 'utf8').catch(() => '');
			if (path.isAbsolute(target) && partialPattern.test(path.basename(target))) {
				await removePartial(target);
				removed.push(target);
			}
		}

		await removeTree(dir);
	}

	return removed;
};
