/**
 * Downloading a builder image archive: verified by SHA-256, resumable across retries and
 * across runs. The bytes go to `dest + '.partial'` (kept on failure or abort); a retry or a
 * later call asks for the rest with `Range: bytes=N-`, and only a complete file whose digest
 * matches is renamed to `dest`.
 */
import crypto from 'node:crypto';
import {createReadStream} from 'node:fs';
import fs, {type FileHandle} from 'node:fs/promises';
import path from 'node:path';
import {Writable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import {setTimeout as sleep} from 'node:timers/promises';
import type {Response} from 'got';
import {z} from 'zod';
import {UserError} from '../errors.js';

export interface FetchProgress {
	/** Bytes of the file on disk so far (resumed bytes included). */
	readonly transferred: number;
	/** Size of the whole file, when the server said. */
	readonly total: number | undefined;
	/** 0–100, when `total` is known. */
	readonly percent: number | undefined;
}

export interface FetchOptions {
	/** http(s) URL of an OCI image archive (.tar). */
	readonly url: string;
	/** Expected SHA-256 of the file: 64 lowercase hex digits. */
	readonly sha256: string;
	/** Final path; only a complete, verified file ever appears there. */
	readonly dest: string;
	readonly onProgress?: (p: FetchProgress) => void;
	readonly signal?: AbortSignal;
	/** Retries after network errors and 5xx answers (default 5); an attempt that got further than any before it is not counted. */
	readonly retries?: number;
}

/** Knobs for tests; not part of the public contract. */
export interface FetchTuning {
	/** First retry delay (doubled for each retry after it); default 1000. */
	readonly backoffMs?: number;
	/** Connect, first-response and idle-socket timeout of one attempt; default 30000. */
	readonly timeoutMs?: number;
}

export interface FetchResult {
	readonly path: string;
	readonly bytes: number;
	/** The file was completed from a partial download (of this call or an earlier one) rather than from byte 0. */
	readonly resumed: boolean;
}

const optionsSchema = z.object({
	url: z.string().refine(value => {
		try {
			const {protocol, hostname} = new URL(value);
			return (protocol === 'http:' || protocol === 'https:') && hostname !== '';
		} catch {
			return false;
		}
	}),
	sha256: z.string().regex(/^[a-f\d]{64}$/),
	dest: z.string().min(1),
	retries: z.number().int().min(0).optional(),
});

const maxBackoffMs = 30_000;
const progressIntervalMs = 100;

/**
 * An attempt that failed in a way worth retrying. `after`: the server's Retry-After, in ms;
 * `restart`: the partial was dropped to start over, which retries at once and uses up no retry.
 */
class Retryable extends Error {
	constructor(message: string, readonly after?: number, readonly restart = false) {
		super(message);
	}
}

/** The partial file could not be read or written: not a network problem, so no retry. */
class LocalFileError extends Error {}

const oneLine = (text: string): string => text.replaceAll(/\s+/g, ' ').trim();

const validate = (options: FetchOptions): void => {
	const result = optionsSchema.safeParse(options);
	if (result.success) {
		return;
	}

	const field = String(result.error.issues[0]?.path[0] ?? '');
	const hints: Record<string, [string, string]> = {
		url: [`not an http(s) URL: ${JSON.stringify(options.url)}`, 'give the full address of the image archive, e.g. https://example.com/builder.tar'],
		sha256: [`not a SHA-256 digest: ${JSON.stringify(options.sha256)}`, 'give the 64 lowercase hex digits of the archive\'s SHA-256 (no "sha256:" prefix)'],
		dest: ['no destination path for the download', 'give the path the archive should be saved to'],
		retries: [`retries must be a whole number ≥ 0, not ${String(options.retries)}`, 'leave it out for the default of 5'],
	};
	const [message, hint] = hints[field] ?? [`invalid download options: ${oneLine(result.error.message)}`, 'check the url, sha256 and dest'];
	throw new UserError(message, {hint, code: 'E_USAGE'});
};

/** `bytes START-END/TOTAL` (TOTAL may be `*`). */
const parseContentRange = (value: string | undefined): {start: number; total: number | undefined} | undefined => {
	const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value?.trim() ?? '');
	if (!match) {
		return undefined;
	}

	return {start: Number(match[1]), total: match[3] === '*' ? undefined : Number(match[3])};
};

const retryAfterMs = (response: Response): number | undefined => {
	const value = response.headers['retry-after'];
	if (value === undefined) {
		return undefined;
	}

	const seconds = Number(value);
	const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(value) - Date.now();
	return Number.isFinite(ms) && ms >= 0 ? Math.min(ms, maxBackoffMs) : undefined;
};

/**
 * Appends to the partial file, updating the hash only after the bytes are written, so the hash
 * always matches what is on disk (an interrupted attempt leaves a consistent prefix to resume from).
 */
const appendingWriter = (handle: FileHandle, onChunk: (chunk: Buffer) => void): Writable => {
	let inFlight: Promise<void> = Promise.resolve();
	const writeAll = async (chunk: Buffer): Promise<void> => {
		let done = 0;
		while (done < chunk.length) {
			const {bytesWritten} = await handle.write(chunk, done, chunk.length - done);
			done += bytesWritten;
		}
	};

	return new Writable({
		write(chunk: Buffer, _encoding, callback) {
			inFlight = writeAll(chunk).then(() => {
				onChunk(chunk);
			});
			inFlight.then(() => {
				callback();
			}, (error: unknown) => {
				callback(new LocalFileError(`writing the download failed: ${(error as Error).message}`, {cause: error}));
			});
		},
		destroy(error, callback) {
			// Let a write that has started finish, so the hash and the file agree.
			inFlight.then(() => {
				callback(error);
			}, () => {
				callback(error);
			});
		},
	});
};

/**
 * Downloads `url` to `dest`, verifying its SHA-256. Network errors and 5xx (and 408/429)
 * answers are retried with exponential backoff, resuming from the bytes already in
 * `dest + '.partial'`; a 4xx answer fails at once. On abort the partial file is kept.
 */
export const fetchVerified = async (options: FetchOptions & FetchTuning): Promise<FetchResult> => {
	// Loaded when something is downloaded: got and its HTTP/2 helpers cost every build's start-up ~20 ms otherwise.
	const {default: got, RequestError} = await import('got');
	validate(options);
	const {url, sha256: expected, dest, onProgress, signal} = options;
	const retries = options.retries ?? 5;
	const backoffMs = options.backoffMs ?? 1000;
	const timeoutMs = options.timeoutMs ?? 30_000;
	const partial = `${dest}.partial`;

	const interrupted = (): UserError => new UserError(`download of ${url} interrupted`, {
		hint: `the bytes so far are kept in ${partial}; run again to resume`, exitCode: 130, code: 'E_INTERRUPTED',
	});
	if (signal?.aborted) {
		throw interrupted();
	}

	await fs.mkdir(path.dirname(dest), {recursive: true});

	// Bytes on disk and their running hash; the partial from an earlier run is hashed first.
	let hash = crypto.createHash('sha256');
	let offset = 0;
	let resumed = false;
	try {
		for await (const chunk of createReadStream(partial, signal === undefined ? {} : {signal})) {
			hash.update(chunk as Buffer);
			offset += (chunk as Buffer).length;
		}
	} catch (error) {
		if (signal?.aborted) {
			throw interrupted();
		}

		if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
			throw new UserError(`cannot read the partial download ${partial}: ${(error as Error).message}`, {
				hint: 'delete it to start the download afresh', exitCode: 1, code: 'E_DOWNLOAD', cause: error,
			});
		}
	}

	// A complete partial (say, the last run stopped between its last byte and the rename) needs no request.
	if (offset > 0 && hash.copy().digest('hex') === expected) {
		await fs.rename(partial, dest);
		onProgress?.({transferred: offset, total: offset, percent: 100});
		return {path: dest, bytes: offset, resumed: true};
	}

	const restart = async (): Promise<void> => {
		await fs.truncate(partial, 0).catch(() => undefined);
		hash = crypto.createHash('sha256');
		offset = 0;
		resumed = false;
	};

	let total: number | undefined;
	// At most one report per interval; a skipped one is sent when the interval ends, so a
	// burst followed by a stall still shows where the download stands.
	let lastReport = 0;
	let trailing: NodeJS.Timeout | undefined;
	const report = (force: boolean): void => {
		if (onProgress === undefined) {
			return;
		}

		const wait = lastReport + progressIntervalMs - performance.now();
		if (!force && wait > 0) {
			trailing ??= setTimeout(() => {
				trailing = undefined;
				report(true);
			}, wait).unref();
			return;
		}

		clearTimeout(trailing);
		trailing = undefined;
		lastReport = performance.now();
		onProgress({transferred: offset, total, percent: total === undefined || total === 0 ? undefined : Math.min(100, (offset / total) * 100)});
	};

	/** One request; resolves when the body has been written in full. */
	const attempt = async (): Promise<void> => {
		const from = offset;
		const request = got.stream(url, {
			headers: {'accept-encoding': 'identity', ...(from > 0 ? {range: `bytes=${from}-`} : {})},
			decompress: false,
			throwHttpErrors: false,
			retry: {limit: 0},
			timeout: {connect: timeoutMs, socket: timeoutMs, response: timeoutMs},
			...(signal === undefined ? {} : {signal}),
		});
		// Without a listener, an error before 'response' would be unhandled.
		const response = await new Promise<Response>((resolve, reject) => {
			request.once('response', resolve);
			request.once('error', reject);
		});
		const {statusCode} = response;
		const fail = (error: Error): never => {
			request.destroy();
			throw error;
		};

		if (statusCode === 416 && from > 0) {
			// The partial is no prefix the server can continue (e.g. the file changed): start over.
			await restart();
			fail(new Retryable(`HTTP 416 for bytes=${from}-; starting over`, 0, true));
		}

		if (statusCode >= 500 || statusCode === 408 || statusCode === 429) {
			fail(new Retryable(`HTTP ${statusCode} from ${url}`, retryAfterMs(response)));
		}

		if (statusCode !== 200 && statusCode !== 206) {
			fail(new UserError(`downloading ${url} failed: HTTP ${statusCode}${response.statusMessage ? ` ${response.statusMessage}` : ''}`, {
				hint: statusCode === 404 ? 'check the URL: the server has no file there' : 'check the URL and that the server lets you download it',
				exitCode: 1,
				code: 'E_DOWNLOAD',
			}));
		}

		const length = response.headers['content-length'] === undefined ? undefined : Number(response.headers['content-length']);
		if (statusCode === 206) {
			const range = parseContentRange(response.headers['content-range']);
			if (range?.start !== from) {
				// Not the range we asked for: ask for the whole file instead.
				await restart();
				fail(new Retryable(`HTTP 206 with Content-Range ${JSON.stringify(response.headers['content-range'])} for bytes=${from}-; starting over`, 0, true));
			}

			total = range?.total ?? (length === undefined ? undefined : from + length);
			resumed = from > 0;
		} else {
			if (from > 0) {
				await restart(); // The server ignored Range: the body is the whole file.
			}

			total = length;
		}

		report(true);
		let handle: FileHandle;
		try {
			handle = await fs.open(partial, 'a');
		} catch (error) {
			return fail(new LocalFileError(`cannot write ${partial}: ${(error as Error).message}`, {cause: error}));
		}

		try {
			await pipeline(request, appendingWriter(handle, chunk => {
				hash.update(chunk);
				offset += chunk.length;
				report(false);
			}));
			await handle.sync();
		} finally {
			await handle.close();
		}

		report(true);
		if (total !== undefined && offset > total) {
			const received = offset;
			await restart();
			throw new Retryable(`the server sent ${received} bytes for a file of ${total}; starting over`);
		}

		if (total !== undefined && offset < total) {
			throw new Retryable(`the connection closed after ${offset} of ${total} bytes`);
		}
	};

	let attempts = 0;
	let failures = 0;
	let furthest = offset;
	try {
		for (;;) {
			try {
				attempts++;
				await attempt();
				break;
			} catch (error) {
				if (signal?.aborted) {
					throw interrupted();
				}

				if (error instanceof UserError) {
					throw error;
				}

				if (error instanceof LocalFileError) {
					throw new UserError(oneLine(error.message), {hint: `check the space and permissions of ${path.dirname(partial)}`, exitCode: 1, code: 'E_DOWNLOAD', cause: error});
				}

				const retryable = error instanceof Retryable || error instanceof RequestError;
				if (!retryable) {
					throw error;
				}

				// A restart after a bad Range answer (the next request has no Range, so this cannot
				// repeat), or an attempt that left more of the file on disk than any before it (bounded
				// by the file's size), does not use up a retry.
				const free = (error instanceof Retryable && error.restart) || (offset > furthest && (total === undefined || offset <= total));
				furthest = Math.max(furthest, offset);
				if (!free) {
					failures++;
				}

				if (failures > retries) {
					throw new UserError(`downloading ${url} failed after ${attempts} attempts: ${oneLine((error as Error).message)}`, {
						hint: offset > 0 ? `${offset} bytes are kept in ${partial}; run again to resume` : 'check the network and the URL, then run again',
						exitCode: 1,
						code: 'E_DOWNLOAD',
						cause: error,
					});
				}

				const delay = error instanceof Retryable && error.after !== undefined
					? error.after
					: Math.min(maxBackoffMs, backoffMs * (2 ** Math.max(0, failures - 1))) * (0.8 + (Math.random() * 0.4));
				try {
					await sleep(delay, undefined, signal === undefined ? {} : {signal});
				} catch {
					throw interrupted();
				}
			}
		}
	} finally {
		clearTimeout(trailing); // No report after this call has settled.
	}

	const actual = hash.digest('hex');
	if (actual !== expected) {
		await fs.rm(partial, {force: true});
		throw new UserError(`checksum mismatch for ${url}: expected sha256 ${expected}, got ${actual}`, {
			hint: 'the download was deleted; check that the URL and the expected digest belong together',
			exitCode: 1,
			code: 'E_CHECKSUM',
		});
	}

	await fs.rename(partial, dest);
	return {path: dest, bytes: offset, resumed};
};
