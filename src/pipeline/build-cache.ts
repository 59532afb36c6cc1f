/**
 * The build cache that outlives the sandbox: one folder per project (context + Dockerfile)
 * under buildCacheDir(), shared read-write with the sandbox at /exobuild/cache, where the agent
 * keeps the engine's cache (buildah: its image storage with every layer; BuildKit: a local cache
 * export). One build of a project uses it at a time (a lock with an owner record; the lock of a
 * killed run is broken), so concurrent builds never corrupt it. `exobuild prune` bounds its size.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {z} from 'zod';
import {cacheDir} from '../paths.js';
import {checkCacheFolder, ensureCacheFolder, readCacheRecord} from '../runs/cache-guard.js';
import {writeCacheJson} from '../runs/cache-write.js';
import {tryLock, withLock} from '../runs/lock.js';
import {createOwnedDir, reapOwnedDirs} from '../runs/owned-dir.js';
import type {StateVolumes} from '../sandboxes/driver.js';
import {listStateSlots, reapStateSlots, removeStateSlot} from './engine-state.js';

export const buildCacheDir = (env?: NodeJS.ProcessEnv): string => path.join(cacheDir(env), 'build-cache');

const projectRecord = z.object({context: z.string(), dockerfile: z.string(), lastUsed: z.string()});
const recordFile = 'project.json';
const dataDir = 'data';
/** A project cache folder's name: 16 hex digits. Anything else in build-cache/ is not a project cache. */
const projectName = /^[a-f0-9]{16}$/;
/** A project cache being removed by prune: `.NAME.pruned-<pid>-<random>`. */
const prunedPrefix = (name: string): string => `.${name}.pruned-`;

/** The folder of a project's cache: named by a hash of its context and Dockerfile paths. */
export const projectCacheDir = (contextDir: string, dockerfile: string): string =>
	path.join(buildCacheDir(), crypto.createHash('sha256').update(`${contextDir}\0${dockerfile}`).digest('hex').slice(0, 16));

/** A project cache's lock: beside its folder, so that prune can move the folder aside while holding it. */
const lockOf = (dir: string): string => `${dir}.lock`;

/**
 * Runs `use` with the project's cache data folder held exclusively; waits (saying so) while
 * another build holds it. A project folder that is not a real folder of this user (a symlink)
 * is set aside and made anew; one that prune removed while this build waited is made anew.
 */
export const withProjectCache = async <T>(
	contextDir: string,
	dockerfile: string,
	onWait: () => void,
	use: (data: string) => Promise<T>,
	signal?: AbortSignal,
): Promise<T> => {
	const dir = projectCacheDir(contextDir, dockerfile);
	await ensureCacheFolder(buildCacheDir());
	return withLock(lockOf(dir), onWait, async () => {
		const data = await ensureCacheFolder(path.join(dir, dataDir));
		await writeCacheJson(path.join(dir, recordFile), {context: contextDir, dockerfile, lastUsed: new Date().toISOString()});
		return use(data);
	}, signal);
};

/** The bytes of the regular files under `dir` (no symlink followed). */
const sizeOf = async (dir: string): Promise<number> => {
	let total = 0;
	const entries = await fs.readdir(dir, {withFileTypes: true, recursive: true}).catch(() => []);
	for (const entry of entries) {
		if (entry.isFile()) {
			total += (await fs.lstat(path.join(entry.parentPath, entry.name)).catch(() => ({size: 0}))).size;
		}
	}

	return total;
};

export interface ProjectCache {
	readonly dir: string;
	readonly context: string | undefined;
	readonly lastUsed: string | undefined;
	readonly bytes: number;
}

/** The project caches: real folders of this user only (anything else is set aside, with a warning); corrupt records are set aside. */
export const listProjectCaches = async (): Promise<ProjectCache[]> => {
	if (!(await checkCacheFolder(buildCacheDir()))) {
		return [];
	}

	const names = (await fs.readdir(buildCacheDir()).catch(() => [] as string[])).filter(name => projectName.test(name));
	const caches: ProjectCache[] = [];
	for (const name of names) {
		const dir = path.join(buildCacheDir(), name);
		if (!(await checkCacheFolder(dir))) {
			continue;
		}

		const record = await readCacheRecord(path.join(dir, recordFile), projectRecord);
		caches.push({dir, context: record?.context, lastUsed: record?.lastUsed, bytes: await sizeOf(dir)});
	}

	return caches;
};

/**
 * Removes one project cache while holding its lock: the folder is moved aside under the lock
 * (a build waiting for it then starts with a fresh cache), then removed. False if a live build holds it.
 */
const removeProjectCache = async (dir: string): Promise<boolean> => {
	const held = await tryLock(lockOf(dir));
	if (held === undefined) {
		return false;
	}

	const name = path.basename(dir);
	const aside = path.join(path.dirname(dir), `${prunedPrefix(name)}${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
	try {
		if (!(await checkCacheFolder(dir))) {
			return true;
		}

		// The moved folder gets an owner record, so that a prune killed while removing it is finished by the next.
		const owned = await createOwnedDir(aside, 'pruned-cache');
		await fs.rename(dir, path.join(aside, name));
		await held.release();
		await owned.remove();
		return true;
	} finally {
		await held.release();
	}
};

/**
 * Removes the least recently used project caches and BuildKit state slots until the total is at most `maxBytes`
 * (0: all, even when the sizes cannot be read: a rootless sandbox leaves folders only its ids can list).
 * A cache in use by a live build is skipped. With `stateVolumes` (a driver that keeps BuildKit's
 * state in volumes of its own), each slot's volume counts with its slot and goes with it.
 * Returns what was removed.
 */
export const pruneProjectCaches = async (maxBytes: number, stateVolumes?: StateVolumes): Promise<ProjectCache[]> => {
	await reapOwnedDirs(buildCacheDir(), name => /^\.[a-f0-9]{16}\.pruned-/.test(name));
	await reapStateSlots();
	// BuildKit's kept states (./engine-state.ts) count against the same bound.
	const projects = (await listProjectCaches()).map(cache => ({...cache, remove: removeProjectCache}));
	const slots = (await listStateSlots(stateVolumes)).map(slot => ({...slot, context: undefined, remove: async (dir: string) => removeStateSlot(dir, stateVolumes)}));
	const caches = [...projects, ...slots].sort((a, b) => (a.lastUsed ?? '').localeCompare(b.lastUsed ?? ''));
	let total = caches.reduce((sum, cache) => sum + cache.bytes, 0);
	const removed: ProjectCache[] = [];
	for (const {remove, ...cache} of caches) {
		if (maxBytes > 0 && total <= maxBytes) {
			break;
		}

		if (await remove(cache.dir)) {
			total -= cache.bytes;
			removed.push(cache);
		}
	}

	return removed;
};

/** "10G", "500M", "0" → bytes. */
export const parseSize = (text: string): number | undefined => {
	const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(text.trim());
	if (!match) {
		return undefined;
	}

	const power = ['', 'k', 'm', 'g', 't'].indexOf(match[2]!.toLowerCase());
	return Math.round(Number(match[1]) * (1024 ** power));
};
