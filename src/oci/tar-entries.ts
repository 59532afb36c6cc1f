/**
 * Reading a tar file (plain or gzipped) one entry at a time, strictly: every node-tar warning
 * (a bad checksum, a truncated archive, an entry type it does not know) is an error, and an
 * abort signal stops the read between entries and between chunks.
 */
import {createReadStream} from 'node:fs';
import fs, {type FileHandle} from 'node:fs/promises';
import {pipeline, type Readable} from 'node:stream';
import zlib from 'node:zlib';
import * as tar from 'tar';

export type Compression = 'none' | 'gzip' | 'zstd';

const zstdMagic = Buffer.from([0x28, 0xB5, 0x2F, 0xFD]);

/** An open file's compression, from its first bytes (gzip's and zstd's magic numbers). */
export const sniffCompression = async (handle: FileHandle): Promise<Compression> => {
	const buffer = Buffer.alloc(4);
	const {bytesRead} = await handle.read(buffer, 0, 4, 0);
	const magic = buffer.subarray(0, bytesRead);
	if (magic.equals(zstdMagic)) {
		return 'zstd';
	}

	return magic[0] === 0x1F && magic[1] === 0x8B ? 'gzip' : 'none';
};

/** `source` gunzipped. The callback form destroys both streams when either fails or the reader gives up; the reader sees the error. */
export const gunzipped = (source: Readable): Readable => pipeline(source, zlib.createGunzip(), () => undefined);

/** The tar stream of `file`, gunzipped when it starts with gzip's magic bytes; zstd is refused. */
export const openTarFile = async (file: string): Promise<Readable> => {
	const handle = await fs.open(file, 'r');
	let compression: Compression;
	try {
		compression = await sniffCompression(handle);
	} finally {
		await handle.close();
	}

	if (compression === 'zstd') {
		throw new Error(`${file} is zstd-compressed, which exobuild cannot decompress`);
	}

	const source = createReadStream(file);
	return compression === 'gzip' ? gunzipped(source) : source;
};

/**
 * The entries of a tar stream in order. Each must be read to its end (or resumed) before the
 * next is asked for. The stream is destroyed when the loop ends, early or not.
 */
export async function * tarEntries(input: Readable, signal?: AbortSignal): AsyncGenerator<tar.ReadEntry> {
	const parser = new tar.Parser({strict: true});
	const queue: tar.ReadEntry[] = [];
	let ended = false;
	let failure: unknown;
	let current: tar.ReadEntry | undefined;
	let wake: (() => void) | undefined;
	const signalReader = (): void => {
		const resume = wake;
		wake = undefined;
		resume?.();
	};

	const fail = (error: unknown): void => {
		failure ??= error;
		signalReader();
		// A reader waiting for the current entry's data would wait forever: fail it too.
		if (current !== undefined && !current.emittedEnd) {
			current.emit('error', error instanceof Error ? error : new Error(String(error)));
		}
	};

	// An archive of only its two zero end blocks is legal (POSIX ustar) and common: it is the empty
	// layer (sha256:4f4fb700…) BuildKit and Docker write for a RUN that changes nothing. node-tar
	// 7 reports it as TAR_BAD_ARCHIVE "Unrecognized archive format" (parse.js, on DONE, when no
	// valid entry was seen); after its end-of-archive marker with no entries, that is no error.
	let sawEntry = false;
	let sawEndMarker = false;
	parser.on('eof', () => {
		sawEndMarker = true;
	});
	parser.on('entry', (entry: tar.ReadEntry) => {
		sawEntry = true;
		entry.on('error', () => undefined);
		queue.push(entry);
		signalReader();
	});
	parser.on('ignoredEntry', (entry: tar.ReadEntry) => {
		fail(new Error(`${entry.path}: unsupported tar entry type ${entry.type}`));
	});
	parser.on('warn', (code: string, message: string) => {
		fail(new Error(`${code}: ${message}`));
	});
	parser.on('end', () => {
		ended = true;
		signalReader();
	});
	parser.on('error', (error: Error & {code?: string}) => {
		if (error.code === 'TAR_BAD_ARCHIVE' && sawEndMarker && !sawEntry) {
			return;
		}

		fail(error);
	});
	input.on('error', fail);
	const onAbort = (): void => {
		fail(signal!.reason ?? new Error('aborted'));
	};

	signal?.addEventListener('abort', onAbort, {once: true});
	input.pipe(parser as unknown as NodeJS.WritableStream);
	try {
		for (;;) {
			signal?.throwIfAborted();
			if (failure !== undefined) {
				throw failure;
			}

			const next = queue.shift();
			if (next !== undefined) {
				current = next;
				yield next;
			} else if (ended) {
				return;
			} else {
				await new Promise<void>(resolve => {
					wake = resolve;
				});
			}
		}
	} finally {
		signal?.removeEventListener('abort', onAbort);
		input.destroy();
		input.unpipe(parser as unknown as NodeJS.WritableStream);
	}
}
