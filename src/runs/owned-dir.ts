/**
 * Folders owned by a live exobuild process. Each holds `owner.json` naming the owning process
 * (pid + its start time from /proc, so a reused pid is not mistaken for the owner). A folder
 * whose owner is gone belongs to a run that was killed hard; `reapOwnedDirs` removes it.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {execa} from 'execa';
import {z} from 'zod';
import {removeTree} from '../fs/remove-tree.js';
import {checkCacheFolder, ensureCacheFolder, inCache} from './cache-guard.js';

const ownerRecord = z.object({
	pid: z.number().int().positive(),
	/** Field 22 of /proc/<pid>/stat (clock ticks since boot), or `ps -o lstart=` on macOS. */
	startTime: z.string().optional(),
	kind: z.string(),
	created: z.string(),
});
export type OwnerRecord = z.infer<typeof ownerRecord>;

export const ownerFile = 'owner.json';

/** Start time of a process, from /proc/<pid>/stat; undefined if there is no such process or no /proc. */
export const processStartTime = async (pid: number): Promise<string | undefined> => {
	if (process.platform === 'darwin') {
		// No /proc: ps prints the start time ("Sun Nov 29 05:37:52 2026"), stable for the process's life.
		const ps = await execa('ps', ['-o', 'lstart=', '-p', String(pid)], {reject: false});
		return ps.exitCode === 0 && String(ps.stdout).trim() !== '' ? String(ps.stdout).trim().replaceAll(/\s+/g, ' ') : undefined;
	}

	try {
		const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
		// The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
		return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
	} catch {
		return undefined;
	}
};

const processAlive = (pid: number): boolean => {
	try {
		process.kill(pid, 0);
		return true;
	} catch (error) {
		return (error as NodeJS.ErrnoException).code === 'EPERM';
	}
};

/** Whether the process named by a record is still running (same pid, same start time). */
export const ownerAlive = async (record: OwnerRecord): Promise<boolean> => {
	if (!processAlive(record.pid)) {
		return false;
	}

	if (record.startTime === undefined) {
		return true;
	}

	return (await processStartTime(record.pid)) === record.startTime;
};

export interface OwnedDir {
	readonly path: string;
	remove(): Promise<void>;
}

/** Makes `dir` mode 0700: inside exobuild's cache every folder on the way is checked (./cache-guard.ts). */
export const ensurePrivateFolder = async (dir: string): Promise<void> => {
	await (inCache(dir) ? ensureCacheFolder(dir) : fs.mkdir(dir, {recursive: true, mode: 0o700}));
};

/** The text of an owner record for this process; the random id tells two records of one process apart. */
export const ownerRecordText = async (kind: string): Promise<string> => {
	const startTime = await processStartTime(process.pid);
	const record: OwnerRecord & {id: string} = {
		pid: process.pid, ...(startTime === undefined ? {} : {startTime}), kind, created: new Date().toISOString(), id: crypto.randomBytes(8).toString('hex'),
	};
	return `${JSON.stringify(record)}\n`;
};

/** Creates `dir` (which must not exist), mode 0700, with an owner record for this process. */
export const createOwnedDir = async (dir: string, kind: string): Promise<OwnedDir> => {
	await ensurePrivateFolder(path.dirname(dir));
	await fs.mkdir(dir, {mode: 0o700});
	await fs.writeFile(path.join(dir, ownerFile), await ownerRecordText(kind), {mode: 0o600});
	return {path: dir, remove: async () => removeTree(dir)};
};

/** An owner record's text (undefined if unreadable), read without following a symlink. */
export const readOwnerText = async (dir: string): Promise<string | undefined> =>
	fs.readFile(path.join(dir, ownerFile), {encoding: 'utf8', flag: fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW}).catch(() => undefined);

export const parseOwner = (text: string | undefined): OwnerRecord | undefined => {
	try {
		return text === undefined ? undefined : ownerRecord.parse(JSON.parse(text));
	} catch {
		return undefined;
	}
};

export const readOwner = async (dir: string): Promise<OwnerRecord | undefined> => parseOwner(await readOwnerText(dir));

/**
 * Removes the folders under `parent` (accepted by `filter`) whose owner is gone. A folder with
 * no readable owner record is removed once it is older than `graceMs` (its creator was killed
 * between mkdir and writing the record). Returns the names removed.
 */
export const reapOwnedDirs = async (parent: string, filter: (name: string) => boolean = () => true, graceMs = 60_000): Promise<string[]> => {
	if (inCache(parent) && !(await checkCacheFolder(parent))) {
		return [];
	}

	let names: string[];
	try {
		names = await fs.readdir(parent);
	} catch {
		return [];
	}

	const removed: string[] = [];
	for (const name of names.filter(filter)) {
		const dir = path.join(parent, name);
		const owner = await readOwner(dir);
		let dead: boolean;
		if (owner === undefined) {
			const stat = await fs.lstat(dir).catch(() => undefined);
			dead = stat !== undefined && stat.isDirectory() && Date.now() - stat.mtimeMs > graceMs;
		} else {
			dead = !(await ownerAlive(owner));
		}

		if (dead) {
			await removeTree(dir);
			removed.push(name);
		}
	}

	return removed;
};
