/**
 * Paths of untrusted layer entries, resolved beneath a root folder the way a chroot would
 * (openat2's RESOLVE_IN_ROOT, Go's securejoin): a symlink met on the way is followed, but an
 * absolute target restarts at the root and `..` stops at the root, so no resolution ever leaves
 * it. Only folders are resolved here; the last component of an entry is never followed.
 *
 * The root must not be changed by anyone else while a layer is applied (it is a private folder).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type {Stats} from 'node:fs';

/** As Linux's MAXSYMLINKS: more symlinks than this on one path is a loop or an attack. */
export const maxSymlinkHops = 40;

/**
 * The components of a tar entry name: leading `/` and `./` stripped, empty and `.` components
 * dropped ([] is the root itself); undefined when a component is `..`.
 */
export const entryComponents = (name: string): string[] | undefined => {
	const parts = name.split('/').filter(part => part !== '' && part !== '.');
	return parts.includes('..') ? undefined : parts;
};

/** lstat, or undefined when nothing is there. */
export const lstatOrUndefined = async (file: string): Promise<Stats | undefined> => {
	try {
		return await fs.lstat(file);
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return undefined;
		}

		throw error;
	}
};

export class PathResolutionError extends Error {
	override readonly name = 'PathResolutionError';
}

/**
 * Resolves the folder `parts` beneath `root`, following symlinks only within it. Returns the
 * resolved components (each one a real folder under `root`, none a symlink). A missing
 * component is created as a folder (mode 0755) when `create` is set, else the result is
 * undefined; a component that exists and is neither a folder nor a symlink is an error when
 * creating, else undefined.
 */
export const resolveFolder = async (root: string, parts: readonly string[], create: boolean): Promise<string[] | undefined> => {
	const resolved: string[] = [];
	const pending = [...parts];
	let hops = 0;
	while (pending.length > 0) {
		const part = pending.shift()!;
		if (part === '' || part === '.') {
			continue;
		}

		if (part === '..') {
			resolved.pop();
			continue;
		}

		const here = path.join(root, ...resolved, part);
		const stat = await lstatOrUndefined(here);
		if (stat?.isSymbolicLink()) {
			hops++;
			if (hops > maxSymlinkHops) {
				throw new PathResolutionError(`${parts.join('/')}: more than ${maxSymlinkHops} symlinks on the way`);
			}

			const target = await fs.readlink(here);
			if (target.startsWith('/')) {
				resolved.length = 0;
			}

			pending.unshift(...target.split('/'));
			continue;
		}

		if (stat?.isDirectory()) {
			resolved.push(part);
			continue;
		}

		if (!create) {
			return undefined;
		}

		if (stat !== undefined) {
			throw new PathResolutionError(`${parts.join('/')}: ${[...resolved, part].join('/')} is not a folder`);
		}

		await fs.mkdir(here, {mode: 0o700});
		await fs.chmod(here, 0o755);
		resolved.push(part);
	}

	return resolved;
};

/** Whether every component of `parts` under `root` is a real folder (no symlink, nothing missing). */
export const isRealFolder = async (root: string, parts: readonly string[]): Promise<boolean> => {
	for (let depth = 1; depth <= parts.length; depth++) {
		const stat = await lstatOrUndefined(path.join(root, ...parts.slice(0, depth)));
		if (stat === undefined || !stat.isDirectory()) {
			return false;
		}
	}

	return true;
};
