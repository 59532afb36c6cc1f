/**
 * Where a file output goes (`-o type=oci|docker|tar,dest=…`, `--iidfile`, `--metadata-file`,
 * `builder save -o`), and writing it as buildx does without ever replacing what it must not:
 *
 * - nothing there, or a regular file: written to a partial file in the same folder (tracked, so
 *   a signal removes it and the next run reaps it after a SIGKILL), fsync'd, renamed into place;
 *   on any error the previous file stays as it was;
 * - a symlink: followed to its final target (dangling too), which these same rules handle; the
 *   link stays;
 * - a character device or FIFO: opened for writing and written as a stream, never replaced;
 * - `-`, `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`: the process's own descriptor, written as a stream;
 * - a folder, block device or socket, a folder that cannot be written, or a missing folder:
 *   refused (exit 2), by resolveFileDestination, which request validation calls before anything
 *   starts.
 *
 * A full filesystem is a UserError naming the folder (E_NO_SPACE, exit 1); any other write error
 * a one-line UserError (E_OUTPUT_WRITE, exit 1).
 */
import fs, {constants} from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type {Writable} from 'node:stream';
import {promisify} from 'node:util';
import {isUserError, UserError} from '../errors.js';
import {partialPathOf, trackPartial} from '../runs/partials.js';

/** Code of a destination refused before writing (exit 2). */
export const destinationErrorCode = 'E_OUTPUT_DEST';
/** Code of a full filesystem or quota while writing (exit 1). */
export const noSpaceErrorCode = 'E_NO_SPACE';
/** Code of any other error writing an output (exit 1). */
export const writeErrorCode = 'E_OUTPUT_WRITE';

export type FileDestination =
	/** Nothing there, or a regular file: replaced atomically. `file` is the final target (symlinks followed). */
	| {readonly kind: 'replace'; readonly file: string; readonly previous: {readonly mode: number; readonly uid: number; readonly gid: number} | undefined}
	/** A character device or FIFO, opened for writing. */
	| {readonly kind: 'stream'; readonly file: string}
	/** A descriptor this process already has open: 1 for `-` and /dev/stdout. */
	| {readonly kind: 'descriptor'; readonly fd: number};

const refuse = (message: string, hint: string): UserError => new UserError(message, {hint, code: destinationErrorCode, exitCode: 2});

const noSpaceCodes = new Set(['ENOSPC', 'EDQUOT']);

/** ENOSPC/EDQUOT as a UserError naming the folder that is full. */
export const noSpaceError = (folder: string, cause: unknown): UserError => new UserError(
	`no space left in ${folder} (${(cause as NodeJS.ErrnoException).code ?? 'ENOSPC'})`,
	{hint: 'free some space there, or write the output to another filesystem; a previous file there was kept', code: noSpaceErrorCode, exitCode: 1, cause},
);

export const isNoSpace = (error: unknown): boolean => noSpaceCodes.has(String((error as NodeJS.ErrnoException | undefined)?.code));

/** An error from writing `file` as the one line the user sees (a UserError passes through). */
const writeFailure = (file: string, error: unknown): unknown => {
	if (isUserError(error)) {
		return error;
	}

	if (isNoSpace(error)) {
		// The folder of the path that failed (a partial, a record), else the destination's.
		const failed = (error as NodeJS.ErrnoException).path;
		return noSpaceError(path.dirname(failed === undefined ? file : path.resolve(failed)), error);
	}

	const {code, path: failed} = (error ?? {}) as NodeJS.ErrnoException;
	const where = failed === undefined || path.resolve(failed) === file ? '' : ` (${failed})`;
	return new UserError(`cannot write ${file}: ${code ?? (error as Error).message}${where}`, {
		hint: 'check the destination (permissions, a reader for a FIFO, the disk); a previous file there was kept',
		code: writeErrorCode,
		exitCode: 1,
		cause: error,
	});
};

/** /dev/stdout style names of this process's descriptors (checked before any lookup: /proc/self/fd/N links name pipes, not paths). */
const descriptorOf = (file: string): number | undefined => {
	const named = ({'/dev/stdin': 0, '/dev/stdout': 1, '/dev/stderr': 2} as Record<string, number>)[file];
	if (named !== undefined) {
		return named;
	}

	const match = new RegExp(`^/(?:dev/fd|proc/self/fd|proc/thread-self/fd|proc/${process.pid}/fd)/(\\d+)$`).exec(file);
	return match === null ? undefined : Number(match[1]);
};

const lstatOrUndefined = (file: string): fs.Stats | undefined => {
	try {
		return fs.lstatSync(file);
	} catch (error) {
		const code = (error as NodeJS.ErrnoException).code;
		if (code === 'ENOENT' || code === 'ENOTDIR') {
			return undefined;
		}

		throw refuse(`cannot look at output ${file} (${code ?? (error as Error).message})`, 'choose a dest you can read and write');
	}
};

/** The folder of `file` with its own symlinks resolved (the folder a relative link target is relative to), or as written when missing. */
const realFolderOf = (file: string): string => {
	try {
		return fs.realpathSync(path.dirname(file));
	} catch {
		return path.dirname(file);
	}
};

/** Follows symlinks from `file` to what is finally there: a descriptor, or a path and its lstat (undefined: nothing there). */
const follow = (file: string): {fd: number} | {file: string; stat: fs.Stats | undefined} => {
	let current = file;
	for (let hop = 0; hop <= 40; hop++) {
		const fd = descriptorOf(current);
		if (fd !== undefined) {
			return {fd};
		}

		const stat = lstatOrUndefined(current);
		if (stat === undefined || !stat.isSymbolicLink()) {
			return {file: current, stat};
		}

		current = path.resolve(realFolderOf(current), fs.readlinkSync(current));
	}

	throw refuse(`output ${file}: too many levels of symbolic links`, 'point the dest at a file, not at a loop of links');
};

/** Refuses a `file` whose folder is missing or where a file cannot be made: a file is made there and removed (the one check that sees /proc, read-only mounts and root alike). */
const checkFolderWritable = (given: string, file: string): void => {
	const folder = path.dirname(file);
	let stat: fs.Stats | undefined;
	try {
		stat = fs.statSync(folder);
	} catch {}

	if (stat === undefined) {
		throw refuse(`output ${given}: folder ${folder} does not exist`, 'create it first, or choose another dest');
	}

	if (!stat.isDirectory()) {
		throw refuse(`output ${given}: ${folder} is not a folder`, 'choose a dest in a folder');
	}

	const probe = partialPathOf(file);
	try {
		fs.closeSync(fs.openSync(probe, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600));
		fs.rmSync(probe, {force: true});
	} catch (error) {
		if (isNoSpace(error)) {
			throw noSpaceError(folder, error);
		}

		throw refuse(`output ${given}: cannot create files in ${folder} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, 'choose a dest in a folder you can write');
	}
};

/**
 * What writing to `dest` (an absolute path, or `-`) would do, checked as far as it can be
 * before writing; a UserError (E_OUTPUT_DEST, exit 2) when it must not be written at all.
 */
export const resolveFileDestination = (dest: string): FileDestination => {
	if (dest === '-') {
		return {kind: 'descriptor', fd: 1};
	}

	const given = path.resolve(dest);
	const found = follow(given);
	if ('fd' in found) {
		let stat: fs.Stats;
		try {
			stat = fs.fstatSync(found.fd);
		} catch {
			throw refuse(`output ${given}: descriptor ${found.fd} is not open`, 'write to a file, or to - (stdout)');
		}

		if (stat.isDirectory()) {
			throw refuse(`output ${given}: descriptor ${found.fd} is a folder`, 'write to a file, or to - (stdout)');
		}

		return {kind: 'descriptor', fd: found.fd};
	}

	const {file, stat} = found;
	const shown = file === given ? given : `${given} (→ ${file})`;
	if (stat === undefined || stat.isFile()) {
		checkFolderWritable(shown, file);
		return {kind: 'replace', file, previous: stat === undefined ? undefined : {mode: stat.mode & 0o777, uid: stat.uid, gid: stat.gid}};
	}

	if (stat.isCharacterDevice() || stat.isFIFO()) {
		try {
			fs.accessSync(file, constants.W_OK);
		} catch {
			throw refuse(`output ${shown}: ${stat.isFIFO() ? 'FIFO' : 'device'} is not writable`, 'choose a dest you can write');
		}

		return {kind: 'stream', file};
	}

	if (stat.isDirectory()) {
		throw refuse(`output ${shown} is a folder`, 'this output writes one file: name a file (in that folder, if you like)');
	}

	const what = stat.isBlockDevice() ? 'a block device' : (stat.isSocket() ? 'a socket' : 'not a file');
	throw refuse(`output ${shown} is ${what}`, 'exobuild writes outputs to files, character devices, FIFOs or stdout (-); name a file');
};

/** Whether writing to `dest` writes to this process's stdout (`-`, /dev/stdout): nothing else may be printed there. */
export const writesToStdout = (dest: string): boolean => {
	try {
		const destination = resolveFileDestination(dest);
		return destination.kind === 'descriptor' && destination.fd === 1;
	} catch {
		return false;
	}
};

/**
 * The folder output of `-o type=oci,tar=false`, which replaces its dest whole: refused (exit 2)
 * when it is not a folder, when it holds files and is not an OCI layout (it would be deleted),
 * or when its parent folder cannot be written. Symlinks are followed; returns the final path.
 */
export const resolveLayoutFolderDestination = (dest: string): string => {
	const given = path.resolve(dest);
	const found = follow(given);
	if ('fd' in found) {
		throw refuse(`output ${given} is not a folder`, 'type=oci,tar=false writes a folder; name one');
	}

	const {file, stat} = found;
	const shown = file === given ? given : `${given} (→ ${file})`;
	if (stat !== undefined && !stat.isDirectory()) {
		throw refuse(`output ${shown} is not a folder`, 'type=oci,tar=false writes a folder; name a new folder or an OCI layout folder');
	}

	let entries: string[] = [];
	try {
		entries = stat === undefined ? [] : fs.readdirSync(file);
	} catch (error) {
		throw refuse(`output ${shown}: cannot read the folder (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, 'choose a folder you can read and write');
	}

	if (entries.length > 0 && !entries.includes('oci-layout')) {
		throw refuse(`output ${shown} holds files and is not an OCI layout: writing the layout would replace them`, 'name a new or empty folder, e.g. dest=out/layout');
	}

	checkFolderWritable(shown, file);
	return file;
};

/** Ends `out` and waits until everything is written (errors reject); the descriptor stays open ('close' is not awaited). */
const endAndFlush = async (out: Writable): Promise<void> => new Promise<void>((resolve, reject) => {
	out.once('error', reject);
	out.end(() => {
		out.off('error', reject);
		resolve();
	});
});

/**
 * The error to throw for `error`, raised while writing `label`: `streamError` (the destination's
 * own error, if it had one) or a full disk as the user's one line; an error of the source the
 * content came from (a bad blob…) as it is.
 */
const failureOf = (label: string, error: unknown, streamError: unknown, fromSource: boolean): unknown =>
	(fromSource && streamError === undefined && !isNoSpace(error) ? error : writeFailure(label, streamError ?? error));

/** Writes through `out` (a descriptor's or device's stream): `write` pipes into it without ending it. */
const writeThrough = async (label: string, out: Writable, write: (out: Writable) => Promise<void>, end: boolean): Promise<void> => {
	let streamError: unknown;
	const onError = (error: unknown): void => {
		streamError ??= error;
	};

	out.on('error', onError);
	let fromSource = true;
	try {
		await write(out);
		fromSource = false;
		if (end) {
			await endAndFlush(out);
		} else if (out.writableNeedDrain) {
			await new Promise<void>((resolve, reject) => {
				out.once('drain', resolve);
				out.once('error', reject);
			});
		}
	} catch (error) {
		throw failureOf(label, error, streamError, fromSource);
	} finally {
		out.off('error', onError);
	}
};

// Plain descriptors, not FileHandles: a FileHandle's stream holds the handle until the stream
// closes, so with autoClose: false (needed to fsync after the last write) it never closes.
const openFd = promisify(fs.open);
const fsyncFd = promisify(fs.fsync);
const closeFd = promisify(fs.close);
const fstatFd = promisify(fs.fstat);
const fchmodFd = promisify(fs.fchmod);
const fchownFd = promisify(fs.fchown);

type ReplacedFile = NonNullable<Extract<FileDestination, {kind: 'replace'}>['previous']>;

const replaceFile = async (file: string, previous: ReplacedFile | undefined, write: (out: Writable) => Promise<void>, signal?: AbortSignal): Promise<void> => {
	const partial = partialPathOf(file);
	const tracked = await trackPartial(partial).catch((error: unknown) => {
		throw writeFailure(file, error);
	});
	let fd: number | undefined;
	let streamError: unknown;
	let fromSource = false;
	try {
		fd = await openFd(partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, previous?.mode ?? 0o666);
		if (previous !== undefined) {
			// The file keeps its owner (when root can give it) and permissions (the umask narrowed them), as buildx's truncate-and-write does.
			if (process.getuid?.() === 0) {
				await fchownFd(fd, previous.uid, previous.gid);
			}

			await fchmodFd(fd, previous.mode);
		}

		const out = fs.createWriteStream('', {fd, autoClose: false});
		out.on('error', error => {
			streamError ??= error;
		});
		fromSource = true;
		await write(out);
		fromSource = false;
		await endAndFlush(out);
		await fsyncFd(fd);
		const done = fd;
		fd = undefined;
		await closeFd(done);
		signal?.throwIfAborted();
		await fsp.rename(partial, file);
		await tracked.release();
	} catch (error) {
		if (fd !== undefined) {
			await closeFd(fd).catch(() => undefined);
		}

		await tracked.discard();
		throw failureOf(file, error, streamError, fromSource);
	}

	// The rename reaches the disk with its folder.
	const folder = await openFd(path.dirname(file), constants.O_RDONLY).catch(() => undefined);
	if (folder !== undefined) {
		await fsyncFd(folder).catch(() => undefined);
		await closeFd(folder).catch(() => undefined);
	}
};

const writeStream = async (file: string, write: (out: Writable) => Promise<void>): Promise<void> => {
	// O_WRONLY without O_CREAT/O_TRUNC: a FIFO waits for its reader here; nothing is made or cut.
	const fd = await openFd(file, constants.O_WRONLY | constants.O_NOCTTY).catch((error: unknown) => {
		throw writeFailure(file, error);
	});
	try {
		const stat = await fstatFd(fd);
		if (!stat.isCharacterDevice() && !stat.isFIFO()) {
			throw refuse(`output ${file} changed while it was opened: it is no longer a device or FIFO`, 'write the output again');
		}

		await writeThrough(file, fs.createWriteStream('', {fd, autoClose: false}), write, true);
	} finally {
		await closeFd(fd).catch(() => undefined);
	}
};

export interface DestinationOptions {
	/** The stream of descriptor 1 (`-`, /dev/stdout); process.stdout unless given. */
	readonly stdout?: Writable;
	/** Once aborted, a finished partial is discarded instead of renamed into place. */
	readonly signal?: AbortSignal;
}

/**
 * Writes a file output at `dest` (absolute, or `-`) by the rules above. `write` writes the whole
 * content into `out` and resolves; it must not end `out` (use pipeline(source, out, {end: false})).
 */
export const writeFileDestination = async (dest: string, write: (out: Writable) => Promise<void>, options: DestinationOptions = {}): Promise<void> => {
	const destination = resolveFileDestination(dest);
	switch (destination.kind) {
		case 'replace': {
			await replaceFile(destination.file, destination.previous, write, options.signal);
			return;
		}

		case 'stream': {
			await writeStream(destination.file, write);
			return;
		}

		case 'descriptor': {
			const label = dest === '-' ? 'stdout' : dest;
			if (destination.fd === 1 || destination.fd === 2) {
				// The process's own stream: written in order with everything else printed there, never ended.
				await writeThrough(label, destination.fd === 1 ? (options.stdout ?? process.stdout) : process.stderr, write, false);
				return;
			}

			await writeThrough(label, fs.createWriteStream('', {fd: destination.fd, autoClose: false}), write, true);
		}
	}
};

/** Writes `content` to `dest` by the rules above (--iidfile, --metadata-file). */
export const writeFileContent = async (dest: string, content: string | Buffer, options: DestinationOptions = {}): Promise<void> => {
	await writeFileDestination(dest, async out => new Promise<void>((resolve, reject) => {
		out.write(content, error => {
			if (error) {
				reject(error);
			} else {
				resolve();
			}
		});
	}), options);
};
