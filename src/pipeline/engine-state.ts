/**
 * Engine state that outlives the throwaway sandbox: BuildKit's `--root` (content store,
 * snapshots, metadata databases) kept in exobuild's cache as a *state slot*
 * (`engine-state/buildkit-N/root`), mounted read-write into each new sandbox, so a warm build
 * unpacks nothing it unpacked before. The sandbox stays disposable; the slot is a cache.
 *
 * - One build holds a slot at a time: a lock with an owner record beside the slot
 *   (`buildkit-N.lock`, src/runs/lock.ts). A build takes the first free slot (0, 1, …), so
 *   concurrent builds use separate slots and never wait for each other.
 * - A slot is *sealed* after a build that ended well (`seal.json`: the path and size of every
 *   file of BuildKit's databases and content store, and each snapshot folder). A slot whose seal
 *   is missing (a killed build) or no longer matches (files truncated or deleted) is one
 *   buildkitd may not be able to open: it is moved aside and removed, the build starts with an
 *   empty state, and one warning line says so.
 * - `exobuild prune --max-cache-size` bounds slots with the project caches (./build-cache.ts).
 * - Where a slot's root lives is the driver's capability (SandboxDriver.engineState): the slot's
 *   `root` folder (linux-userns), or a volume of the driver's own behind the slot number
 *   (apple-container: an Apple `container volume`, src/sandboxes/apple-container/state-volumes.ts).
 *   The host cannot read inside a volume: its seal says only that the last build using it ended
 *   with buildkitd stopped, and a volume without one is removed and made again (one warning).
 *
 * Files in a slot are written by the sandbox's root: this user (its uid maps to the sandbox's
 * root) or, for files of image layers, its subordinate ids; the seal reads only what this user
 * can lstat and never follows a symlink; removal goes through removeTree (src/fs/remove-tree.ts).
 * docker/buildx's docker-container driver keeps BuildKit's state the same way, in a volume that
 * outlives the container (driver/docker-container/driver.go, docker/buildx v0.30).
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {z} from 'zod';
import {UserError} from '../errors.js';
import {cacheDir} from '../paths.js';
import {checkCacheFolder, ensureCacheFolder, readCacheRecord} from '../runs/cache-guard.js';
import {writeCacheJson} from '../runs/cache-write.js';
import {takeLock, tryLock, type HeldLock} from '../runs/lock.js';
import {createOwnedDir, reapOwnedDirs} from '../runs/owned-dir.js';
import type {StateVolumes} from '../sandboxes/driver.js';

export const engineStateDir = (env?: NodeJS.ProcessEnv): string => path.join(cacheDir(env), 'engine-state');

/** How many slots a build tries before waiting for slot 0: more concurrent builds than this wait. */
export const maxSlots = 16;
const slotName = /^buildkit-(\d+)$/;
const rootDir = 'root';
const sealFile = 'seal.json';
const usedFile = 'slot.json';

const slotDir = (index: number): string => path.join(engineStateDir(), `buildkit-${index}`);
const lockOf = (dir: string): string => `${dir}.lock`;

const sealRecord = z.object({version: z.literal(1), entries: z.array(z.tuple([z.string(), z.number()]))});
/** A volume's seal: the host cannot read inside the volume, so it says only that the build using it ended well. */
const volumeSealRecord = z.object({version: z.literal(1), volume: z.string()});
const usedRecord = z.object({lastUsed: z.string()});
/** Failures after which buildkitd was stopped as after a success: the slot is sealed all the same. */
const sealAfter: ReadonlySet<string> = new Set(['E_BUILD_FAILED', 'E_HANG', 'E_BASE_IMAGE', 'E_EXPORT_FAILED', 'E_PLATFORM_UNSUPPORTED']);

/**
 * What a seal lists: every regular file (path, size) and folder (size -1) under the root, except
 * inside a snapshot's own tree (`…/snapshots/snapshots/ID/`: an image's files, which the sandbox's
 * ids may own and which buildkitd does not open to start) and the executor's scratch space.
 * Sorted by path. Nothing is followed: symlinks are listed as such (size -2).
 */
export const sealEntries = async (root: string): Promise<Array<[string, number]>> => {
	const entries: Array<[string, number]> = [];
	const walk = async (dir: string, relative: string): Promise<void> => {
		const children = await fs.readdir(dir, {withFileTypes: true}).catch(() => []);
		for (const child of children) {
			const childRelative = relative === '' ? child.name : `${relative}/${child.name}`;
			const full = path.join(dir, child.name);
			if (child.isSymbolicLink()) {
				entries.push([childRelative, -2]);
			} else if (child.isFile()) {
				entries.push([childRelative, (await fs.lstat(full).catch(() => ({size: -3}))).size]);
			} else if (child.isDirectory()) {
				entries.push([childRelative, -1]);
				const snapshotTree = /(^|\/)snapshots\/snapshots$/.test(relative);
				if (!snapshotTree && child.name !== 'executor') {
					await walk(full, childRelative);
				}
			}
		}
	};

	await walk(root, '');
	return entries.sort(([a], [b]) => (a < b ? -1 : (a > b ? 1 : 0)));
};

/** Why a slot's root does not match its seal (the first difference), or undefined when it does. */
export const sealMismatch = (sealed: ReadonlyArray<readonly [string, number]>, found: ReadonlyArray<readonly [string, number]>): string | undefined => {
	const now = new Map(found);
	for (const [name, size] of sealed) {
		// The daemon's lock file and the executor's scratch come and go; everything else must be as sealed.
		if (name === 'buildkitd.lock') {
			continue;
		}

		const current = now.get(name);
		if (current === undefined) {
			return `${name} is missing`;
		}

		if (current !== size) {
			return size >= 0 && current >= 0 ? `${name} is ${current} bytes, sealed at ${size}` : `${name} changed type`;
		}
	}

	return undefined;
};

/**
 * The slot a build holds: its number, where its root is (the slot's `root` folder, or the
 * driver's volume of that slot), and whether that root is empty (first use, or a broken state
 * was set aside).
 */
export type HeldStateSlot = {readonly index: number; readonly fresh: boolean} & ({readonly root: string} | {readonly volume: string});

/** Moves a slot aside (an owned folder, so a kill while removing is finished by the next run) and removes it. */
const removeSlotFolder = async (dir: string): Promise<void> => {
	const aside = path.join(path.dirname(dir), `.${path.basename(dir)}.pruned-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
	const owned = await createOwnedDir(aside, 'pruned-engine-state');
	await fs.rename(dir, path.join(aside, path.basename(dir))).catch((error: NodeJS.ErrnoException) => {
		if (error.code !== 'ENOENT') {
			throw error;
		}
	});
	await owned.remove();
};

/** Takes the first free slot; waits for slot 0 (saying so once) when all are held. */
const takeSlot = async (onWait: () => void, signal?: AbortSignal): Promise<{index: number; held: HeldLock}> => {
	for (let index = 0; index < maxSlots; index++) {
		signal?.throwIfAborted();
		const held = await tryLock(lockOf(slotDir(index)));
		if (held !== undefined) {
			return {index, held};
		}
	}

	return {index: 0, held: await takeLock(lockOf(slotDir(0)), onWait, signal)};
};

export interface EngineStateHandlers {
	/** Called once when every slot is held and the build waits for slot 0. */
	readonly onWait: () => void;
	/** One line: a kept state was set aside. */
	readonly onWarning: (message: string) => void;
	/** The driver's volumes when it keeps the slots' roots there (else each slot's `root` folder is the root). */
	readonly volumes?: StateVolumes;
}

/** Whether a failure is buildkitd refusing a kept state (worth one more try from an empty one). */
const engineDidNotStart = (error: unknown, fresh: boolean, signal: AbortSignal | undefined): boolean =>
	!fresh && error instanceof UserError && error.code === 'E_ENGINE_START' && signal?.aborted !== true;

/**
 * Runs `use` with a state slot held; on success the slot is sealed. A slot whose seal is missing
 * or does not match is moved aside and removed first, with one `onWarning` line; so is one
 * buildkitd does not start on (then `use` runs once more, on an empty state).
 */
export const withEngineState = async <T>(
	handlers: EngineStateHandlers,
	use: (slot: HeldStateSlot) => Promise<T>,
	signal?: AbortSignal,
): Promise<T> => {
	await ensureCacheFolder(engineStateDir());
	await reapOwnedDirs(engineStateDir(), name => /^\.buildkit-\d+\.pruned-/.test(name));
	const {index, held} = await takeSlot(handlers.onWait, signal);
	try {
		await ensureCacheFolder(slotDir(index));
		return await (handlers.volumes === undefined
			? inHostFolder(index, handlers, use, signal)
			: inVolume(index, handlers.volumes, handlers, use, signal));
	} finally {
		await held.release();
	}
};

/** Writes the seal after `use` ended well, or failed after buildkitd stopped as after a success. */
const sealedAfter = async <T>(use: () => Promise<T>, seal: () => Promise<void>): Promise<T> => {
	let result: T;
	try {
		result = await use();
	} catch (error) {
		// The engine ran and stopped (a failing step, a hang): its state is as good as after a success.
		if (error instanceof UserError && sealAfter.has(error.code)) {
			await seal();
		}

		throw error;
	}

	await seal();
	return result;
};

/**
 * A slot kept in the driver's volume (Apple's `container volume`: an ext4 image the host cannot
 * look into). Health is what the host can know: the seal of the last build that used the volume
 * ended well. A volume without it (a killed build) is removed and made again, with one warning.
 */
const inVolume = async <T>(index: number, volumes: StateVolumes, handlers: EngineStateHandlers, use: (slot: HeldStateSlot) => Promise<T>, signal?: AbortSignal): Promise<T> => {
	const dir = slotDir(index);
	const seal = path.join(dir, sealFile);
	let {name, created} = await volumes.ensure(index);
	if (!created) {
		const sealed = await readCacheRecord(seal, volumeSealRecord);
		if (sealed?.volume !== name) {
			handlers.onWarning(`BuildKit's kept state (volume ${name}) cannot be trusted (it was left unsealed by a build that did not finish); removed, this build starts from an empty volume`);
			await volumes.remove(index);
			({name} = await volumes.ensure(index));
			created = true;
		}
	}

	const attempt = async (fresh: boolean): Promise<T> => {
		await fs.rm(seal, {force: true});
		await writeCacheJson(path.join(dir, usedFile), {lastUsed: new Date().toISOString()});
		return sealedAfter(async () => use({index, volume: name, fresh}), async () => writeCacheJson(seal, {version: 1, volume: name}));
	};

	try {
		return await attempt(created);
	} catch (error) {
		if (!engineDidNotStart(error, created, signal)) {
			throw error;
		}

		handlers.onWarning(`BuildKit did not start on its kept state (volume ${name}); removed, building again from an empty volume`);
		await volumes.remove(index);
		({name} = await volumes.ensure(index));
		return await attempt(true);
	}
};

/** A slot kept in the slot's own `root` folder, mounted read-write (its files sealed by path and size). */
const inHostFolder = async <T>(index: number, handlers: EngineStateHandlers, use: (slot: HeldStateSlot) => Promise<T>, signal?: AbortSignal): Promise<T> => {
	const dir = slotDir(index);
	const root = path.join(dir, rootDir);
	const hasRoot = await fs.lstat(root).then(stat => stat.isDirectory() && !stat.isSymbolicLink(), () => false);
	let fresh = !hasRoot || (await fs.readdir(root)).length === 0;
	if (!fresh) {
		const seal = await readCacheRecord(path.join(dir, sealFile), sealRecord);
		const why = seal === undefined ? 'was left unsealed by a build that did not finish' : sealMismatch(seal.entries, await sealEntries(root));
		if (why !== undefined) {
			handlers.onWarning(`BuildKit's kept state ${dir} cannot be trusted (${why}); set aside, this build starts from an empty state`);
			await removeSlotFolder(dir);
			fresh = true;
		}
	}

	const attempt = async (isFresh: boolean): Promise<T> => {
		await ensureCacheFolder(root);
		await fs.rm(path.join(dir, sealFile), {force: true});
		await writeCacheJson(path.join(dir, usedFile), {lastUsed: new Date().toISOString()});
		return sealedAfter(async () => use({index, root, fresh: isFresh}), async () => writeCacheJson(path.join(dir, sealFile), {version: 1, entries: await sealEntries(root)}));
	};

	try {
		return await attempt(fresh);
	} catch (error) {
		// A sealed state buildkitd still cannot open (damage the seal does not see): once more from an empty one.
		if (!engineDidNotStart(error, fresh, signal)) {
			throw error;
		}

		handlers.onWarning(`BuildKit did not start on its kept state ${dir}; set aside, building again from an empty state`);
		await removeSlotFolder(dir);
		await ensureCacheFolder(dir);
		return await attempt(true);
	}
};

export interface StateSlot {
	readonly dir: string;
	readonly lastUsed: string | undefined;
	readonly bytes: number;
}

/**
 * The bytes of the regular files under `dir` that this user can list (no symlink followed). A
 * folder only the sandbox's subordinate ids can read (an image's 0700 folder) is skipped, not
 * the whole count: most of a slot (content store, databases, most snapshots) is this user's.
 */
const sizeOf = async (dir: string): Promise<number> => {
	let total = 0;
	const children = await fs.readdir(dir, {withFileTypes: true}).catch(() => []);
	for (const child of children) {
		const full = path.join(dir, child.name);
		if (child.isDirectory()) {
			total += await sizeOf(full);
		} else if (child.isFile()) {
			total += (await fs.lstat(full).catch(() => ({size: 0}))).size;
		}
	}

	return total;
};

/** Slot N of a slot folder's name (buildkit-N), or undefined. */
const slotIndexOf = (dir: string): number | undefined => {
	const match = slotName.exec(path.basename(dir));
	return match === null ? undefined : Number(match[1]);
};

/**
 * The state slots: real folders of this user only, each with the bytes of its driver volume
 * where the driver keeps the roots in volumes; a volume whose slot folder is gone (its cache was
 * removed) is listed as a slot never used.
 */
export const listStateSlots = async (volumes?: StateVolumes): Promise<StateSlot[]> => {
	const kept = volumes === undefined ? [] : await volumes.list();
	const slots: StateSlot[] = [];
	const seen = new Set<number>();
	if (await checkCacheFolder(engineStateDir())) {
		for (const name of (await fs.readdir(engineStateDir()).catch(() => [] as string[])).filter(entry => slotName.test(entry))) {
			const dir = path.join(engineStateDir(), name);
			if (!(await checkCacheFolder(dir))) {
				continue;
			}

			const index = slotIndexOf(dir)!;
			seen.add(index);
			const used = await readCacheRecord(path.join(dir, usedFile), usedRecord);
			const volumeBytes = kept.filter(volume => volume.slot === index).reduce((sum, volume) => sum + volume.bytes, 0);
			slots.push({dir, lastUsed: used?.lastUsed, bytes: await sizeOf(dir) + volumeBytes});
		}
	}

	for (const volume of kept.filter(candidate => !seen.has(candidate.slot))) {
		slots.push({dir: slotDir(volume.slot), lastUsed: undefined, bytes: volume.bytes});
	}

	return slots;
};

/** Removes one slot (its folder, and its driver volume) while holding its lock; false if a live build holds it. */
export const removeStateSlot = async (dir: string, volumes?: StateVolumes): Promise<boolean> => {
	await ensureCacheFolder(engineStateDir());
	const held = await tryLock(lockOf(dir));
	if (held === undefined) {
		return false;
	}

	try {
		const index = slotIndexOf(dir);
		if (volumes !== undefined && index !== undefined) {
			await volumes.remove(index);
		}

		if (await checkCacheFolder(dir)) {
			await removeSlotFolder(dir);
		}

		return true;
	} finally {
		await held.release();
	}
};

/** Removes what prunes killed while removing a slot left behind. */
export const reapStateSlots = async (): Promise<void> => {
	await reapOwnedDirs(engineStateDir(), name => /^\.buildkit-\d+\.pruned-/.test(name));
};
