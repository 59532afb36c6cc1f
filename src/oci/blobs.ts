/**
 * Reading untrusted OCI image layouts (a user's --build-context, the layout the engine exported,
 * a builder archive's): only regular files inside the layout are opened, never through a symlink
 * (`blobs/` and `blobs/sha256/` must be real folders; the file is opened O_NOFOLLOW|O_NONBLOCK and
 * fstat'd); a blob's size must be its descriptor's; JSON documents are read whole only under a
 * fixed cap and parsed after their digest is checked; anything larger is streamed and hashed.
 * Every failure is a UserError with one line naming the layout and the blob.
 */
import crypto from 'node:crypto';
import {constants, type Stats} from 'node:fs';
import fs, {type FileHandle} from 'node:fs/promises';
import path from 'node:path';
import {Readable, Transform, type TransformCallback} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import {UserError} from '../errors.js';
import {memoisedSha256} from '../runs/file-digests.js';
import {describeSchemaError, isDigest, type SafeParser} from './schema.js';

export const badImageCode = 'E_BAD_IMAGE';

export const ociLimits = {
	/** index.json, image indexes, manifests and configs: a larger one is refused unread. */
	jsonBytes: 4 * 1024 * 1024,
	/** Image indexes inside image indexes (an index listed in index.json is at depth 1). */
	indexDepth: 4,
	/** Descriptors listed by index.json and the indexes below it, in one walk of a layout. */
	descriptors: 1000,
} as const;

/** A layout and what to say about it: how messages name it and which exit code its errors carry. */
export interface LayoutSource {
	readonly dir: string;
	/** How messages name the layout ("--build-context base (/images/debian)"). */
	readonly label: string;
	/** 2: the user gave it (bad input); 1: the engine exported it or an archive held it (the build failed). */
	readonly exitCode: 1 | 2;
	/** Whether `dir` itself may be a symlink (a path the user chose). Nothing below it may be. */
	readonly followRoot: boolean;
}

/** A layout the user named (--build-context, an archive given on the command line). */
export const userLayout = (dir: string, label = dir): LayoutSource => ({dir, label, exitCode: 2, followRoot: true});

/** A layout exobuild or the engine wrote (the sandbox's export, an unpacked stored archive). */
export const producedLayout = (dir: string, label = dir): LayoutSource => ({dir, label, exitCode: 1, followRoot: false});

/** A folder path is a layout the engine or exobuild produced. */
export type LayoutRef = string | LayoutSource;

export const layoutSource = (layout: LayoutRef): LayoutSource => (typeof layout === 'string' ? producedLayout(layout) : layout);

type Problem = 'missing' | 'not-a-file' | 'corrupt' | 'unreadable';

const userHints: Record<Problem, string> = {
	missing: 'the layout is incomplete: copy it again with every blob',
	'not-a-file': 'every blob and index.json must be a regular file inside the layout (no symlinks, FIFOs or devices): copy or export the image again',
	corrupt: 'the layout is corrupt or was changed after it was written: copy or export the image again',
	unreadable: 'this is not an OCI image layout exobuild can read: export the image again with an OCI exporter (e.g. buildctl … --output type=oci,tar=false)',
};
const producedHint = 'the exported image is broken; run the build again with --progress plain to see the engine\'s output';

/** Control characters (a newline in a file name or a JSON key) printed visibly, so a message stays one line. */
export const oneLine = (text: string): string => text.replaceAll(/[\u0000-\u001F\u007F-\u009F\u2028\u2029]/g, c => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`);

/** An untrusted text for a message: one line, at most `max` characters. */
export const printable = (text: string, max = 100): string => oneLine(text.length > max ? `${text.slice(0, max)}…` : text);

/** An untrusted value for a message: JSON-quoted, one line, at most `max` characters. */
export const quoted = (value: unknown, max = 80): string => {
	const text = typeof value === 'string' ? value : String(JSON.stringify(value));
	return oneLine(JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text));
};

/** sha256:0123456789ab… (a malformed digest: quoted). */
export const shortDigest = (digest: unknown): string => (isDigest(digest) ? `${digest.slice(0, 19)}…` : quoted(digest));

/** "blob sha256:0123456789ab… (the config of linux/ppc64le)". */
export const blobName = (digest: unknown, role?: string): string => `blob ${shortDigest(digest)}${role === undefined ? '' : ` (${role})`}`;

export const layoutError = (layout: LayoutRef, what: string, problem: Problem, options: {hint?: string; cause?: unknown} = {}): UserError => {
	const source = layoutSource(layout);
	return new UserError(oneLine(`${source.label}: ${what}`), {
		hint: source.exitCode === 2 ? (options.hint ?? userHints[problem]) : producedHint,
		code: badImageCode,
		exitCode: source.exitCode,
		...(options.cause === undefined ? {} : {cause: options.cause}),
	});
};

const kindOf = (stat: Stats): string => {
	if (stat.isSymbolicLink()) {
		return 'a symbolic link';
	}

	if (stat.isDirectory()) {
		return 'a folder';
	}

	if (stat.isFIFO()) {
		return 'a FIFO';
	}

	if (stat.isCharacterDevice()) {
		return 'a character device';
	}

	if (stat.isBlockDevice()) {
		return 'a block device';
	}

	return stat.isSocket() ? 'a socket' : 'not a regular file';
};

const errnoOf = (error: unknown): string | undefined => (error as NodeJS.ErrnoException | undefined)?.code;

/** The layout folder itself: a folder (reached through a symlink only for a user's path); returns its real path. */
const checkRoot = async (source: LayoutSource): Promise<string> => {
	let stat: Stats;
	try {
		stat = source.followRoot ? await fs.stat(source.dir) : await fs.lstat(source.dir);
	} catch (error) {
		throw layoutError(source, `the layout folder cannot be read (${errnoOf(error) ?? String(error)})`, 'unreadable', {cause: error});
	}

	if (!stat.isDirectory()) {
		throw layoutError(source, `the layout is ${kindOf(stat)}, not a folder`, 'not-a-file');
	}

	return fs.realpath(source.dir);
};

/** `folder` (relative to the layout) is a real folder, not a symlink to one. */
const checkFolder = async (source: LayoutSource, folder: string, what: string): Promise<void> => {
	let stat: Stats;
	try {
		stat = await fs.lstat(path.join(source.dir, folder));
	} catch (error) {
		if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') {
			throw layoutError(source, `${what} is missing (the layout has no ${folder} folder)`, 'missing', {cause: error});
		}

		throw layoutError(source, `${folder} cannot be read (${errnoOf(error) ?? String(error)})`, 'unreadable', {cause: error});
	}

	if (!stat.isDirectory()) {
		throw layoutError(source, `${folder} is ${kindOf(stat)}, not a folder`, 'not-a-file');
	}
};

const openFlags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

export interface OpenedFile {
	readonly handle: FileHandle;
	readonly size: number;
}

/**
 * Opens `relative` (index.json or blobs/ALG/HEX) as a regular file inside the layout: its
 * folders are real folders, the file is no symlink, FIFO, device, socket or folder (checked with
 * lstat before it is opened, so a device is never opened, and with fstat after).
 */
const openRegular = async (source: LayoutSource, relative: string, what: string): Promise<OpenedFile> => {
	const realRoot = await checkRoot(source);
	const folders = relative.split('/').slice(0, -1);
	for (let depth = 1; depth <= folders.length; depth++) {
		await checkFolder(source, folders.slice(0, depth).join('/'), what);
	}

	const file = path.join(source.dir, relative);
	const notAFile = (stat: Stats): UserError => layoutError(source, `${what} is ${kindOf(stat)}, not a file`, 'not-a-file');
	const before = await fs.lstat(file).catch((error: unknown) => {
		if (errnoOf(error) === 'ENOENT') {
			throw layoutError(source, `${what} is missing`, 'missing', {cause: error});
		}

		throw layoutError(source, `${what} cannot be read (${errnoOf(error) ?? String(error)})`, 'unreadable', {cause: error});
	});
	if (!before.isFile()) {
		throw notAFile(before);
	}

	let handle: FileHandle;
	try {
		handle = await fs.open(file, openFlags);
	} catch (error) {
		if (errnoOf(error) === 'ELOOP' || errnoOf(error) === 'EMLINK') {
			throw layoutError(source, `${what} is a symbolic link, not a file`, 'not-a-file', {cause: error});
		}

		throw layoutError(source, `${what} cannot be opened (${errnoOf(error) ?? String(error)})`, errnoOf(error) === 'ENOENT' ? 'missing' : 'unreadable', {cause: error});
	}

	try {
		const stat = await handle.stat();
		if (!stat.isFile()) {
			throw notAFile(stat);
		}

		// Linux: the file opened is the one at that path under the layout's real path (no folder
		// was swapped for a symlink between the checks and the open).
		if (process.platform === 'linux') {
			const opened = await fs.readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined);
			if (opened !== undefined && opened !== path.join(realRoot, relative)) {
				throw layoutError(source, `${what} is not inside the layout (it opened as ${quoted(opened, 200)})`, 'not-a-file');
			}
		}

		return {handle, size: stat.size};
	} catch (error) {
		await handle.close();
		throw error;
	}
};

/** blobs/sha256/HEX of a digest; anything but a sha256 digest is refused before a path is made. */
const blobRelative = (source: LayoutSource, digest: unknown, role?: string): string => {
	if (!isDigest(digest)) {
		throw layoutError(source, `${blobName(digest, role)}: the digest is not a sha256 digest`, 'unreadable');
	}

	return path.posix.join('blobs', ...digest.split(':'));
};

export interface BlobRef {
	readonly digest: string;
	/** The size its descriptor gives; the file must have exactly this size. */
	readonly size?: number | undefined;
}

/** Opens a blob as a regular file inside the layout whose size is its descriptor's. The caller closes the handle. */
export const openBlob = async (layout: LayoutRef, descriptor: BlobRef, role?: string): Promise<OpenedFile> => {
	const source = layoutSource(layout);
	const relative = blobRelative(source, descriptor.digest, role);
	const opened = await openRegular(source, relative, blobName(descriptor.digest, role));
	if (descriptor.size !== undefined && opened.size !== descriptor.size) {
		await opened.handle.close();
		throw layoutError(source, `${blobName(descriptor.digest, role)} does not match its descriptor: it is ${opened.size} bytes, the descriptor says ${descriptor.size}`, 'corrupt');
	}

	return opened;
};

const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** Reads exactly `size` bytes (fewer if the file is shorter now). */
const readExactly = async (handle: FileHandle, size: number): Promise<Buffer> => {
	const buffer = Buffer.alloc(size);
	let offset = 0;
	while (offset < size) {
		const {bytesRead} = await handle.read(buffer, offset, size - offset, offset);
		if (bytesRead === 0) {
			break;
		}

		offset += bytesRead;
	}

	return buffer.subarray(0, offset);
};

const sha256Of = (data: Buffer): string => `sha256:${crypto.createHash('sha256').update(data).digest('hex')}`;

const digestMismatch = (source: LayoutSource, digest: string, role: string | undefined, actual: string): UserError =>
	layoutError(source, `${blobName(digest, role)} does not match its digest (its content hashes to ${shortDigest(actual)})`, 'corrupt');

/** A small blob (a JSON document: at most ociLimits.jsonBytes), whole, checked against its size and digest. */
export const readSmallBlob = async (layout: LayoutRef, descriptor: BlobRef, role?: string): Promise<Buffer> => {
	const source = layoutSource(layout);
	const {handle, size} = await openBlob(source, descriptor, role);
	try {
		if (size > ociLimits.jsonBytes) {
			throw layoutError(source, `${blobName(descriptor.digest, role)} is ${mib(size)}; a JSON document may be at most ${ociLimits.jsonBytes / 1024 / 1024} MiB`, 'unreadable');
		}

		const data = await readExactly(handle, size);
		const actual = sha256Of(data);
		if (data.length !== size || actual !== descriptor.digest) {
			throw digestMismatch(source, descriptor.digest, role, actual);
		}

		return data;
	} finally {
		await handle.close();
	}
};

const parseJson = (source: LayoutSource, what: string, data: Buffer): unknown => {
	try {
		return JSON.parse(data.toString('utf8')) as unknown;
	} catch (error) {
		throw layoutError(source, `${what} is not valid JSON (${(error as Error).message.slice(0, 100)})`, 'unreadable', {cause: error});
	}
};

/** What a JSON document is expected to be: "an image index", and the schema that says so. */
export interface DocumentKind<T> {
	readonly name: string;
	readonly schema: SafeParser<T>;
}

const describeContent = (value: unknown): string | undefined => {
	const mediaType = (value as {mediaType?: unknown} | null)?.mediaType;
	return typeof mediaType === 'string' ? mediaType : undefined;
};

/**
 * A JSON blob parsed as `kind` after its size and digest are checked. A document that is not
 * what its descriptor's media type says is one line: "… is labelled M but is not an image index:
 * manifests is missing".
 */
export const readJsonBlob = async <T>(layout: LayoutRef, descriptor: BlobRef & {mediaType?: string}, role: string | undefined, kind: DocumentKind<T>): Promise<T> => {
	const source = layoutSource(layout);
	const data = await readSmallBlob(source, descriptor, role);
	const value = parseJson(source, blobName(descriptor.digest, role), data);
	const parsed = kind.schema.safeParse(value);
	if (!parsed.success) {
		const labelled = descriptor.mediaType === undefined ? '' : ` is labelled ${printable(descriptor.mediaType)} but`;
		const says = describeContent(value);
		throw layoutError(source, `${blobName(descriptor.digest, role)}${labelled} is not ${kind.name}: ${describeSchemaError(parsed.error)}`, 'unreadable', {
			...(says !== undefined && says !== descriptor.mediaType ? {hint: `its content says it is ${printable(says)}: label it so where it is listed, or export the image again`} : {}),
		});
	}

	return parsed.data;
};

/** index.json, bounded and parsed as `kind`. */
export const readIndexFile = async <T>(layout: LayoutRef, kind: DocumentKind<T>): Promise<T> => {
	const source = layoutSource(layout);
	const {handle, size} = await openRegular(source, 'index.json', 'index.json');
	let data: Buffer;
	try {
		if (size > ociLimits.jsonBytes) {
			throw layoutError(source, `index.json is ${mib(size)}; a JSON document may be at most ${ociLimits.jsonBytes / 1024 / 1024} MiB`, 'unreadable');
		}

		data = await readExactly(handle, size);
	} finally {
		await handle.close();
	}

	const parsed = kind.schema.safeParse(parseJson(source, 'index.json', data));
	if (!parsed.success) {
		throw layoutError(source, `index.json is not ${kind.name}: ${describeSchemaError(parsed.error)}`, 'unreadable');
	}

	return parsed.data;
};

/** Checks the bytes streaming through against a size and digest; fails at the end, before 'end', if they differ. */
class VerifyingStream extends Transform {
	readonly #hash = crypto.createHash('sha256');
	#bytes = 0;
	readonly #expected: {size: number; digest: string};
	readonly #mismatch: (actual: string, bytes: number) => Error;

	constructor(expected: {size: number; digest: string}, mismatch: (actual: string, bytes: number) => Error) {
		super();
		this.#expected = expected;
		this.#mismatch = mismatch;
	}

	override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
		this.#bytes += chunk.length;
		this.#hash.update(chunk);
		callback(undefined, chunk);
	}

	override _flush(callback: TransformCallback): void {
		const actual = `sha256:${this.#hash.digest('hex')}`;
		callback(actual === this.#expected.digest && this.#bytes === this.#expected.size ? undefined : this.#mismatch(actual, this.#bytes));
	}
}

const streamOf = (opened: OpenedFile): Readable => (opened.size === 0
	? Readable.from([]).once('close', () => void opened.handle.close())
	: opened.handle.createReadStream({start: 0, end: opened.size - 1, autoClose: true, highWaterMark: 1024 * 1024}));

/**
 * A blob's bytes as a stream (never read whole), bounded by its size and checked against its
 * digest as it goes: a mismatch fails the stream at its end, before 'end' is emitted.
 */
export const readBlobStream = async (layout: LayoutRef, descriptor: BlobRef, role?: string): Promise<Readable> => {
	const source = layoutSource(layout);
	const opened = await openBlob(source, descriptor, role);
	const verifier = new VerifyingStream({size: opened.size, digest: descriptor.digest}, actual => digestMismatch(source, descriptor.digest, role, actual));
	// The callback form destroys both streams when either fails or the reader gives up; the reader sees the error.
	void pipeline(streamOf(opened), verifier).catch(() => undefined);
	return verifier;
};

/**
 * As verifyBlob, for a file that builds verify again and again (a --build-context base's layers):
 * the digest of a blob whose file has not changed since exobuild last hashed it (same device,
 * inode, size, mtime and ctime, from the opened descriptor) comes from exobuild's cache
 * (src/runs/file-digests.ts); any other is hashed, up to its descriptor's size.
 */
export const verifyBlobRemembered = async (layout: LayoutRef, descriptor: BlobRef, role?: string): Promise<void> => {
	const source = layoutSource(layout);
	const relative = blobRelative(source, descriptor.digest, role);
	const opened = await openBlob(source, descriptor, role);
	try {
		const actual = `sha256:${await memoisedSha256(opened.handle, path.join(source.dir, relative))}`;
		if (actual !== descriptor.digest) {
			throw digestMismatch(source, descriptor.digest, role, actual);
		}
	} finally {
		await opened.handle.close();
	}
};

/** Hashes a blob without keeping it: a regular file inside the layout with its descriptor's size and digest. */
export const verifyBlob = async (layout: LayoutRef, descriptor: BlobRef, role?: string): Promise<void> => {
	const stream = await readBlobStream(layout, descriptor, role);
	for await (const _chunk of stream) {
		// Consumed for the hash.
	}
};
