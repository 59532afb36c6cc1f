/**
 * A lock shared by exobuild processes: a folder holding the owner record of the process that
 * holds it (./owned-dir.ts). The folder is made under a temporary name with its owner record in
 * it, then renamed into place: a visible lock always names its owner, and renaming onto an
 * existing (non-empty) lock fails, which is the "held" signal. Taking it waits while a live
 * process holds it. The lock of a process that died is broken, and so is one whose owner record
 * is unreadable (a crash of an older exobuild between mkdir and the write, a full disk) once it
 * is older than a short grace period. Breaking and releasing rename the lock aside first, so a
 * lock never disappears half-removed.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {setAside, warn} from './cache-guard.js';
import {ensurePrivateFolder, ownerAlive, ownerFile, ownerRecordText, parseOwner, readOwnerText, reapOwnedDirs} from './owned-dir.js';
import {removeTree} from '../fs/remove-tree.js';

/** How old a lock with an unreadable owner record must be before it is broken. */
export const lockGraceMs = 5000;
const pollMs = 250;
/** Suffixes of a lock's temporary names: being taken, broken, released. */
const temporaryKinds = ['take', 'broken', 'release'] as const;

export interface HeldLock {
	readonly path: string;
	/** Gives the lock up (only if it is still this holder's: a lock broken and taken by another process stays theirs). */
	release(): Promise<void>;
}

const temporaryName = (lock: string, kind: typeof temporaryKinds[number]): string =>
	`${lock}.${kind}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;

const isErrno = (error: unknown, ...codes: string[]): boolean => codes.includes((error as NodeJS.ErrnoException).code ?? '');

/** Renames the lock aside and removes it, if it still holds `expected` (else it was retaken meanwhile: put back). */
const removeLock = async (lock: string, expected: string | undefined, kind: 'broken' | 'release'): Promise<void> => {
	if ((await readOwnerText(lock)) !== expected) {
		return;
	}

	const aside = temporaryName(lock, kind);
	try {
		await fs.rename(lock, aside);
	} catch (error) {
		if (isErrno(error, 'ENOENT')) {
			return;
		}

		throw error;
	}

	if ((await readOwnerText(aside)) !== expected) {
		// Another process took the lock between our look and the rename: give it back.
		await fs.rename(aside, lock).catch(() => undefined);
		return;
	}

	await removeTree(aside);
};

/** One attempt: the lock, or undefined when it exists. */
const attempt = async (lock: string): Promise<HeldLock | undefined> => {
	if (await fs.lstat(lock).then(() => true, () => false)) {
		return undefined;
	}

	const temporary = temporaryName(lock, 'take');
	await fs.mkdir(temporary, {mode: 0o700});
	const text = await ownerRecordText('lock');
	try {
		await fs.writeFile(path.join(temporary, ownerFile), text, {mode: 0o600});
		await fs.rename(temporary, lock);
	} catch (error) {
		await removeTree(temporary);
		if (isErrno(error, 'ENOTEMPTY', 'EEXIST', 'ENOTDIR', 'EISDIR')) {
			return undefined;
		}

		throw error;
	}

	let released = false;
	return {
		path: lock,
		async release() {
			if (!released) {
				released = true;
				await removeLock(lock, text, 'release');
			}
		},
	};
};

/**
 * Looks at an existing lock: false while a live owner holds it (or its unreadable record is
 * younger than the grace period); true when it was stale and has been broken (try again).
 */
const breakIfStale = async (lock: string, graceMs: number): Promise<boolean> => {
	const stat = await fs.lstat(lock).catch(() => undefined);
	if (stat === undefined) {
		return true;
	}

	if (stat.isSymbolicLink() || !stat.isDirectory()) {
		await setAside(lock, 'unsafe', stat.isSymbolicLink() ? 'is a symlink' : 'is not a folder');
		return true;
	}

	const text = await readOwnerText(lock);
	const owner = parseOwner(text);
	if (owner !== undefined) {
		if (await ownerAlive(owner)) {
			return false;
		}

		await removeLock(lock, text, 'broken');
		return true;
	}

	if (Date.now() - stat.mtimeMs <= graceMs) {
		return false;
	}

	warn(`${lock} has ${text === undefined ? 'no' : (text.trim() === '' ? 'an empty' : 'an unreadable')} owner record and is ${Math.round((Date.now() - stat.mtimeMs) / 1000)} s old; broken`);
	await removeLock(lock, text, 'broken');
	return true;
};

/** Removes temporary folders of this lock left by killed processes. */
const reapTemporaries = async (lock: string): Promise<void> => {
	const base = path.basename(lock);
	await reapOwnedDirs(path.dirname(lock), name => temporaryKinds.some(kind => name.startsWith(`${base}.${kind}-`)));
};

/** Takes the lock if it is free (or stale); undefined while a live process holds it. */
export const tryLock = async (lock: string, graceMs = lockGraceMs): Promise<HeldLock | undefined> => {
	await ensurePrivateFolder(path.dirname(lock));
	await reapTemporaries(lock);
	for (let tries = 0; tries < 10; tries++) {
		const held = await attempt(lock);
		if (held !== undefined || !(await breakIfStale(lock, graceMs))) {
			return held;
		}
	}

	return undefined;
};

/** Takes the lock, waiting (and calling `onWait` once) while another live process holds it. */
export const takeLock = async (lock: string, onWait: () => void, signal?: AbortSignal, graceMs = lockGraceMs): Promise<HeldLock> => {
	let waited = false;
	for (;;) {
		signal?.throwIfAborted();
		const held = await tryLock(lock, graceMs);
		if (held !== undefined) {
			return held;
		}

		if (!waited) {
			onWait();
			waited = true;
		}

		await sleep(pollMs, undefined, signal === undefined ? {} : {signal}).catch(() => undefined);
	}
};

/** Runs `run` holding the lock. Only taking the lock waits or retries: whatever `run` throws is rethrown as is. */
export const withLock = async <T>(lock: string, onWait: () => void, run: () => Promise<T>, signal?: AbortSignal): Promise<T> => {
	const held = await takeLock(lock, onWait, signal);
	try {
		return await run();
	} finally {
		await held.release();
	}
};
