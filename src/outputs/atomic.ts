/**
 * Atomic outputs: a folder is built beside its destination and renamed into place (an existing
 * one is renamed aside first and deleted after), a file goes through writeFileAtomically, and a
 * stream to stdout is written with backpressure and never ended (stdout belongs to the process).
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {Readable, type Writable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import {UserError} from '../errors.js';
import {removeTree} from '../runs/owned-dir.js';
import {outputErrorCode} from './images.js';

const sibling = (dest: string, suffix: string): string =>
	path.join(path.dirname(dest), `.${path.basename(dest)}.${crypto.randomBytes(4).toString('hex')}.${suffix}`);

/**
 * Builds a folder at `dest` through `build(partialDir)`: the partial folder is a sibling of
 * `dest` (same filesystem), created empty with mode 0755. Only once it is complete does it
 * replace `dest`: an existing `dest` is renamed aside, the new one renamed in, the old one
 * deleted. On failure `dest` is untouched and the partial folder removed. A `dest` that exists
 * and is not a folder is refused before anything is built.
 */
export const replaceDirAtomically = async (dest: string, build: (partialDir: string) => Promise<void>): Promise<void> => {
	const existing = await fs.lstat(dest).catch(() => undefined);
	if (existing !== undefined && !existing.isDirectory()) {
		throw new UserError(`${dest} exists and is not a folder`, {hint: 'choose another dest, or remove it', code: outputErrorCode});
	}

	await fs.mkdir(path.dirname(path.resolve(dest)), {recursive: true});
	const partial = sibling(dest, 'partial');
	await fs.mkdir(partial, {mode: 0o755});
	await fs.chmod(partial, 0o755); // the umask may have narrowed it
	try {
		await build(partial);
	} catch (error) {
		await removeTree(partial);
		throw error;
	}

	if (existing === undefined) {
		await fs.rename(partial, dest);
		return;
	}

	const old = sibling(dest, 'old');
	await fs.rename(dest, old);
	try {
		await fs.rename(partial, dest);
	} catch (error) {
		await fs.rename(old, dest).catch(() => undefined);
		await removeTree(partial);
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
