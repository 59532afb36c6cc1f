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
import {withLock} from '../runs/lock.js';
import {removeTree} from '../runs/owned-dir.js';

export const buildCacheDir = (env?: NodeJS.ProcessEnv): string => path.join(cacheDir(env), 'build-cache');

const projectRecord = z.object({context: z.string(), dockerfile: z.string(), lastUsed: z.string()});
const recordFile = 'project.json';
const dataDir = 'data';

/** The folder of a project's cache: named by a hash of its context and Dockerfile paths. */
export const projectCacheDir = (contextDir: string, dockerfile: string): string =>
	path.join(buildCacheDir(), crypto.createHash('sha256').update(`${contextDir}\0${dockerfile}`).digest('hex').slice(0, 16));

/** Runs `use` with the project's cache data folder held exclusively; waits (saying so) while another build holds it. */
export const withProjectCache = async <T>(
	contextDir: string,
	dockerfile: string,
	onWait: () => void,
	use: (data: string) => Promise<T>,
	signal?: AbortSignal,
): Promise<T> => {
	const dir = projectCacheDir(contextDir, dockerfile);
	await fs.mkdir(path.join(dir, dataDir), {recursive: true});
	return withLock(path.join(dir, '.lock'), onWait, async () => {
		await fs.writeFile(path.join(dir, recordFile), `${JSON.stringify({context: contextDir, dockerfile, lastUsed: new Date().toISOString()})}\n`);
		return use(path.join(dir, dataDir));
	}, signal);
};

const sizeOf = async (dir: string): Promise<number> => {
	let total = 0;
	const entries = await fs.readdir(dir, {withFileTypes: true, recursive: true}).catch(() => []);
	for (const entry of entries) {
		if (entry.isFile()) {
			// eslint-disable-next-line no-await-in-loop
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

export const listProjectCaches = async (): Promise<ProjectCache[]> => {
	const names = await fs.readdir(buildCacheDir()).catch(() => [] as string[]);
	return Promise.all(names.map(async name => {
		const dir = path.join(buildCacheDir(), name);
		const record = projectRecord.safeParse(JSON.parse(await fs.readFile(path.join(dir, recordFile), 'utf8').catch(() => 'null')));
		return {dir, context: record.data?.context, lastUsed: record.data?.lastUsed, bytes: await sizeOf(dir)};
	}));
};

/**
 * Removes the least recently used project caches until the total is at most `maxBytes`
 * (0: all, even when the sizes cannot be read: a rootless sandbox leaves folders only its ids can list).
 * A cache in use by a live build is skipped. Returns what was removed.
 */
export const pruneProjectCaches = async (maxBytes: number): Promise<ProjectCache[]> => {
	const caches = (await listProjectCaches()).sort((a, b) => (a.lastUsed ?? '').localeCompare(b.lastUsed ?? ''));
	let total = caches.reduce((sum, cache) => sum + cache.bytes, 0);
	const removed: ProjectCache[] = [];
	for (const cache of caches) {
		if (maxBytes > 0 && total <= maxBytes) {
			break;
		}

		try {
			// eslint-disable-next-line no-await-in-loop
			await withLock(path.join(cache.dir, '.lock'), () => {
				throw Object.assign(new Error('in use'), {code: 'EBUSY'});
			}, async () => {
				await removeTree(path.join(cache.dir, dataDir));
			});
			// eslint-disable-next-line no-await-in-loop
			await removeTree(cache.dir);
			total -= cache.bytes;
			removed.push(cache);
		} catch (error) {
			if ((error as NodeJS.ErrnoException).code !== 'EBUSY') {
				throw error;
			}
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
