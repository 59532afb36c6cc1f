/**
 * exobuild's cache is exobuild's and nobody else's. The cache root is a real folder (not a
 * symlink) owned by the invoking user, mode 0700 (a wider one is narrowed: it holds the
 * builder's setuid binaries); every folder exobuild makes in it is 0700 and is checked with lstat
 * before use: a folder that is a symlink, not a folder, or owned by someone else is set aside
 * (renamed `NAME.unsafe-<time>`), never followed. A record that does not parse is set aside
 * (`NAME.corrupt-<time>`) with a one-line warning; it is never fatal.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type {ZodType} from 'zod';
import {UserError} from '../errors.js';
import {cacheDir} from '../paths.js';

/** Records are small; anything larger is not one of ours. */
const maxRecordBytes = 1024 * 1024;

const myUid = (): number | undefined => process.getuid?.();

/** What exobuild keeps in its cache root (src/paths.ts and its users). */
const cacheEntries = new Set(['builder-images', 'runs', 'build-cache', 'engine-state', 'file-digests', 'linux-userns', 'apple-container']);

export const warn = (message: string): void => {
	process.stderr.write(`exobuild: warning: ${message}\n`);
};

/** Renames `file` (a record, a folder, a symlink: never followed) to `NAME.<label>-<time>` beside it, saying so. */
export const setAside = async (file: string, label: 'corrupt' | 'unsafe', why: string): Promise<void> => {
	const aside = `${file}.${label}-${Date.now()}`;
	try {
		await fs.rename(file, aside);
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return;
		}

		throw error;
	}

	warn(`${file} ${why}; set aside as ${path.basename(aside)}`);
};

const isInside = (dir: string, root: string): boolean => {
	const relative = path.relative(root, dir);
	return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
};

/** Whether `dir` is exobuild's cache root or inside it. */
export const inCache = (dir: string, env: NodeJS.ProcessEnv = process.env): boolean => {
	const root = cacheDir(env);
	return path.resolve(dir) === root || isInside(path.resolve(dir), root);
};

/** Makes the cache root (mode 0700) or checks the existing one: a real folder of this user; a wider mode is narrowed. */
export const ensureCacheRoot = async (env: NodeJS.ProcessEnv = process.env): Promise<string> => {
	const root = cacheDir(env);
	const uid = myUid();
	const hint = 'point EXOBUILD_CACHE_DIR at a folder of your own (it is made, mode 0700, if it does not exist)';
	let stat = await fs.lstat(root).catch(() => undefined);
	if (stat === undefined) {
		await fs.mkdir(path.dirname(root), {recursive: true});
		await fs.mkdir(root, {mode: 0o700}).catch((error: NodeJS.ErrnoException) => {
			if (error.code !== 'EEXIST') {
				throw error;
			}
		});
		stat = await fs.lstat(root);
	}

	if (stat.isSymbolicLink() || !stat.isDirectory()) {
		throw new UserError(`exobuild's cache ${root} is ${stat.isSymbolicLink() ? 'a symlink' : 'not a folder'}; exobuild follows no symlink in its cache`, {
			hint: stat.isSymbolicLink() ? `${hint}; to keep using the linked folder, set EXOBUILD_CACHE_DIR=${await fs.realpath(root).catch(() => 'its target')}` : hint,
			code: 'E_CACHE_UNSAFE',
			exitCode: 2,
		});
	}

	if (uid !== undefined && stat.uid !== uid) {
		throw new UserError(`exobuild's cache ${root} belongs to uid ${stat.uid}, not to you (uid ${uid})`, {
			hint,
			code: 'E_CACHE_UNSAFE',
			exitCode: 2,
		});
	}

	if ((stat.mode & 0o077) !== 0) {
		// Narrowed only when it is exobuild's own folder: never a shared one such as /tmp or a home folder.
		const foreign = (await fs.readdir(root)).filter(name => !cacheEntries.has(name));
		if (foreign.length > 0 || (stat.mode & 0o1000) !== 0) {
			throw new UserError(`exobuild's cache ${root} is open to other users (mode ${(stat.mode & 0o7777).toString(8)}) and holds ${foreign.length > 0 ? `other files (${foreign.slice(0, 3).join(', ')})` : 'a sticky bit'}`, {
				hint: 'give exobuild a folder of its own: set EXOBUILD_CACHE_DIR to a new folder (made mode 0700)',
				code: 'E_CACHE_UNSAFE',
				exitCode: 2,
			});
		}

		await fs.chmod(root, 0o700);
	}

	return root;
};

/** Every folder from just below the cache `root` down to `target` (none for the root itself), in order. */
const foldersBelow = (root: string, target: string): string[] => {
	if (target === root) {
		return [];
	}

	if (!isInside(target, root)) {
		throw new Error(`internal: ${target} is not inside exobuild's cache ${root}`);
	}

	let current = root;
	return path.relative(root, target).split(path.sep).map(part => {
		current = path.join(current, part);
		return current;
	});
};

/** Why an lstat result that is not one of this user's folders is set aside. */
const whyUnsafe = (stat: {isDirectory(): boolean; isSymbolicLink(): boolean; uid: number}): string =>
	stat.isSymbolicLink() ? 'is a symlink' : (stat.isDirectory() ? `belongs to uid ${stat.uid}` : 'is not a folder');

/** Whether an lstat result is a real folder owned by this user. */
const isOwnFolder = (stat: {isDirectory(): boolean; isSymbolicLink(): boolean; uid: number}): boolean => {
	const uid = myUid();
	return !stat.isSymbolicLink() && stat.isDirectory() && (uid === undefined || stat.uid === uid);
};

/**
 * Makes `dir` inside the cache, and every folder between the cache root and it, mode 0700;
 * each existing one must be a real folder owned by this user, else it is set aside and made anew.
 */
export const ensureCacheFolder = async (dir: string, env: NodeJS.ProcessEnv = process.env): Promise<string> => {
	const root = await ensureCacheRoot(env);
	const target = path.resolve(dir);
	for (const current of foldersBelow(root, target)) {
		const stat = await fs.lstat(current).catch(() => undefined);
		if (stat !== undefined && isOwnFolder(stat)) {
			continue;
		}

		if (stat !== undefined) {
			await setAside(current, 'unsafe', whyUnsafe(stat));
		}

		await fs.mkdir(current, {mode: 0o700}).catch((error: NodeJS.ErrnoException) => {
			if (error.code !== 'EEXIST') {
				throw error;
			}
		});
		const made = await fs.lstat(current);
		if (!isOwnFolder(made)) {
			throw new Error(`internal: ${current} changed while exobuild was making it`);
		}
	}

	return target;
};

/**
 * Whether `dir` (the cache root or a folder inside it) exists as a real folder owned by this user,
 * as does every folder between the root and it. One that is not (a symlink, a file, a folder of
 * another user) is set aside with a warning and false returned; nothing is made.
 */
export const checkCacheFolder = async (dir: string, env: NodeJS.ProcessEnv = process.env): Promise<boolean> => {
	const root = cacheDir(env);
	if (await fs.lstat(root).then(() => false, () => true)) {
		return false;
	}

	await ensureCacheRoot(env);
	for (const current of foldersBelow(root, path.resolve(dir))) {
		const stat = await fs.lstat(current).catch(() => undefined);
		if (stat === undefined) {
			return false;
		}

		if (!isOwnFolder(stat)) {
			await setAside(current, 'unsafe', whyUnsafe(stat));
			return false;
		}
	}

	return true;
};

/**
 * Reads a JSON record of the cache: undefined when there is none; a record that is not a
 * regular file, is too large, or does not parse against `schema` is set aside with a warning.
 */
export const readCacheRecord = async <T>(file: string, schema: ZodType<T>): Promise<T | undefined> => {
	const stat = await fs.lstat(file).catch(() => undefined);
	if (stat === undefined) {
		return undefined;
	}

	if (!stat.isFile() || stat.size > maxRecordBytes) {
		await setAside(file, 'corrupt', stat.isFile() ? `is larger than ${maxRecordBytes} bytes` : 'is not a regular file');
		return undefined;
	}

	let text: string;
	try {
		text = await fs.readFile(file, {encoding: 'utf8', flag: fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW});
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return undefined;
		}

		throw error;
	}

	let parsed: T;
	try {
		parsed = schema.parse(JSON.parse(text));
	} catch (error) {
		await setAside(file, 'corrupt', `is not a valid record (${(error instanceof SyntaxError ? error.message : 'unexpected fields').split('\n')[0]})`);
		return undefined;
	}

	return parsed;
};
