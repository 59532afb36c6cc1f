/**
 * Atomic outputs: a folder is built beside its destination and renamed into place (an existing
 * one is renamed aside first and deleted after); a file goes through ./destination.ts; a stream
 * to stdout is written with backpressure and never ended (stdout belongs to the process).
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {Readable, type Writable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import {UserError} from '../errors.js';
import {removeTree} from '../fs/remove-tree.js';
import {partialPathOf, trackPartial} from '../runs/partials.js';
import {isNoSpace, noSpaceError} from './destination.js';
import {outputErrorCode} from './images.js';

/** `dest` with symlinks followed to what is finally there (a dangling link: its target). */
const finalPath = async (dest: string): Promise<string> => {
	let current = path.resolve(dest);
	for (let hop = 0; hop <= 40; hop++) {
		const stat = await fs.lstat(current).catch(() => undefined);
		if (!stat?.isSymbolicLink()) {
			return current;
		}

		const folder = await fs.realpath(path.dirname(current)).catch(() => path.dirname(current));
		current = path.resolve(folder, await fs.readlink(current));
	}

	throw new UserError(`${dest}: too many levels of symbolic links`, {hint: 'point the dest at a folder', code: outputErrorCode, exitCode: 2});
};

/**
 * Builds a folder at `dest` through `build(partialDir)`: the partial folder is a sibling of
 * `dest` (same filesystem; tracked, so a signal removes it and the next run reaps it after a
 * SIGKILL), created empty with mode 0755. Only once it is complete does it replace `dest`: an
 * existing `dest` is renamed aside, the new one renamed in, the old one deleted. On failure
 * `dest` is untouched and the partial folder removed. A symlink `dest` is followed (the link
 * stays); a `dest` that exists and is not a folder is refused before anything is built.
 */
export const replaceDirAtomically = async (destArg: string, build: (partialDir: string) => Promise<void>): Promise<void> => {
	const dest = await finalPath(destArg);
	const existing = await fs.lstat(dest).catch(() => undefined);
	if (existing !== undefined && !existing.isDirectory()) {
		throw new UserError(`${dest} exists and is not a folder`, {hint: 'choose another dest, or remove it', code: outputErrorCode, exitCode: 2});
	}

	await fs.mkdir(path.dirname(dest), {recursive: true});
	const tracked = await trackPartial(partialPathOf(dest));
	const partial = tracked.path;
	try {
		await fs.mkdir(partial, {mode: 0o755});
		await fs.chmod(partial, 0o755); // the umask may have narrowed it
		await build(partial);
		if (existing === undefined) {
			await fs.rename(partial, dest);
			await tracked.release();
			return;
		}
	} catch (error) {
		await tracked.discard();
		throw isNoSpace(error) ? noSpaceError(path.dirname(dest), error) : error;
	}

	const old = path.join(path.dirname(dest), `.${path.basename(dest)}.${crypto.randomBytes(4).toString('hex')}.old`);
	await fs.rename(dest, old);
	try {
		await fs.rename(partial, dest);
		await tracked.release();
	} catch (error) {
		await fs.rename(old, dest).catch(() => undefined);
		await tracked.discard();
		throw error;
	}

	await removeTree(old);
};

/** Writes a stream to `out` (process.stdout) with backpressure, without ending it. */
export const streamTo = async (source: Readable | AsyncIterable<Buffer>, out: Writable): Promise<void> => {
	await pipeline(source instanceof Readable ? source : Readable.from(source), out, {end: false});
	if (out.writableNeedDrain) {
		await new Promise<void>((resolve, reject) => {
			out.once('drain', resolve);
			out.once('error', reject);
		});
	}
};
