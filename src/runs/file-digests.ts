/**
 * The SHA-256 of a file that builds read again and again, kept in the cache so that every build
 * does not hash it again: the tool tarballs that name the builder (EXOBUILD_BUILDKIT, 27 MB,
 * builder-image/upstream-tools.ts) and the layers of a --build-context base layout, verified
 * before any sandbox starts (oci/layout.ts). A record (file-digests/<sha256 of dev:ino>.json)
 * holds the file's identity: device, inode, size, mtime and ctime in nanoseconds, all from one fstat of the
 * descriptor the hash would be read from. Any change of the file changes its ctime (which no
 * user call can set back), so a record whose identity differs is not used: the file is hashed
 * again and the record replaced.
 *
 * Racy files (as git calls them, Documentation/technical/racy-git.txt): a file written in the
 * same clock tick as it was hashed could be written again, with the same size, without its
 * timestamps moving on a filesystem with coarse timestamps (1-2 s on some). So a hash is only
 * recorded when the file's ctime is older than `racyMarginMs` before the hash started; a fresher
 * file is hashed by every process until it has aged.
 *
 * What is read later is checked where it is read: making a builder copies the tarball and hashes
 * the copy it reads (upstream-tools.ts extractTool), so a tarball changed after it was planned is
 * refused whatever this memo says; the engine checks each base layer's digest as it imports it.
 */
import crypto from 'node:crypto';
import fs, {type FileHandle} from 'node:fs/promises';
import path from 'node:path';
import {Writable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import {z} from 'zod';
import {cacheDir} from '../paths.js';
import {checkCacheFolder, readCacheRecord} from './cache-guard.js';
import {writeCacheJson} from './cache-write.js';

/** Where the records are. */
export const fileDigestsDir = (): string => path.join(cacheDir(), 'file-digests');

const decimal = z.string().regex(/^\d{1,30}$/);

const identitySchema = z.object({dev: decimal, ino: decimal, size: decimal, mtimeNs: decimal, ctimeNs: decimal}).strict();
type Identity = z.infer<typeof identitySchema>;

const recordSchema = z.object({
	identity: identitySchema,
	sha256: z.string().regex(/^[a-f\d]{64}$/),
	/** The path it was hashed under (for whoever reads the cache; the identity is the key). */
	path: z.string().max(4096),
}).strict();

/** Reads the open file's first `size` bytes (its size when it was opened: never more) and gives their SHA-256 (hex). */
export type FileHasher = (handle: FileHandle, size: number) => Promise<string>;

export const sha256OfHandle: FileHasher = async (handle, size) => {
	const hash = crypto.createHash('sha256');
	if (size > 0) {
		await pipeline(handle.createReadStream({start: 0, end: size - 1, autoClose: false, highWaterMark: 1024 * 1024}), new Writable({
			write(chunk: Buffer, _encoding, callback) {
				hash.update(chunk);
				callback();
			},
		}));
	}

	return hash.digest('hex');
};

const identityOf = (stat: {dev: bigint; ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint}): Identity => ({
	dev: stat.dev.toString(), ino: stat.ino.toString(), size: stat.size.toString(), mtimeNs: stat.mtimeNs.toString(), ctimeNs: stat.ctimeNs.toString(),
});

const sameIdentity = (a: Identity, b: Identity): boolean =>
	a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;

const recordFile = (identity: Identity): string =>
	path.join(fileDigestsDir(), `${crypto.createHash('sha256').update(`${identity.dev}:${identity.ino}`).digest('hex')}.json`);

export interface MemoOptions {
	/** How the file is hashed when no record fits (tests count its calls). */
	readonly hasher?: FileHasher;
	/** A file whose ctime is newer than this before the hash started is not recorded (default 2 s). */
	readonly racyMarginMs?: number;
}

/**
 * The SHA-256 of the regular file open as `handle` (its size and identity from one fstat): from
 * the record when the identity matches, else hashed from `handle` and recorded (unless racy, or
 * the file changed while it was read). `file` is the path it was opened by (kept in the record).
 */
export const memoisedSha256 = async (handle: FileHandle, file: string, options: MemoOptions = {}): Promise<string> => {
	const before = identityOf(await handle.stat({bigint: true}));
	const where = recordFile(before);
	// The folders down to the record are checked as every cache folder is (cache-guard.ts): a symlink is set aside, never followed.
	const record = await checkCacheFolder(fileDigestsDir()) ? await readCacheRecord(where, recordSchema) : undefined;
	if (record !== undefined && sameIdentity(record.identity, before)) {
		return record.sha256;
	}

	const startedNs = BigInt(Date.now()) * 1_000_000n;
	const sha256 = await (options.hasher ?? sha256OfHandle)(handle, Number(before.size));
	const after = identityOf(await handle.stat({bigint: true}));
	const marginNs = BigInt(options.racyMarginMs ?? 2000) * 1_000_000n;
	if (sameIdentity(before, after) && BigInt(after.ctimeNs) < startedNs - marginNs) {
		// A record that cannot be written (a full disk, a read-only cache) only costs the next build a hash.
		await writeCacheJson(where, {identity: after, sha256, path: file}).catch(() => undefined);
	}

	return sha256;
};

/** Opens `file` for reading without blocking on a FIFO or a device (a regular file is read as usual). */
export const openForHash = async (file: string): Promise<FileHandle> => fs.open(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);

/**
 * Removes the records of files that are gone or changed (their path no longer names a file of
 * the recorded identity: a record only a file of that identity could use), for `exobuild
 * prune`; returns how many. Only stat()s the recorded paths, never reads them.
 */
export const pruneFileDigests = async (): Promise<number> => {
	const dir = fileDigestsDir();
	if (!(await checkCacheFolder(dir))) {
		return 0;
	}

	let removed = 0;
	for (const name of await fs.readdir(dir)) {
		if (!/^[a-f\d]{64}\.json$/.test(name)) {
			continue;
		}

		const file = path.join(dir, name);
		const record = await readCacheRecord(file, recordSchema);
		if (record === undefined) {
			continue;
		}

		const stat = await fs.stat(record.path, {bigint: true}).catch(() => undefined);
		if (stat === undefined || !stat.isFile() || !sameIdentity(identityOf(stat), record.identity)) {
			await fs.rm(file, {force: true});
			removed++;
		}
	}

	return removed;
};
