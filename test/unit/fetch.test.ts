import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type {AddressInfo} from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {after, before, beforeEach, test} from 'node:test';
import {fetchVerified, type FetchOptions, type FetchTuning} from '../../src/builder-image/fetch.js';
import {isUserError, UserError} from '../../src/errors.js';

const size = 5 * 1024 * 1024;
const body = crypto.randomBytes(size);
const digest = crypto.createHash('sha256').update(body).digest('hex');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-fetch-'));

type Handler = (request: http.IncomingMessage, response: http.ServerResponse, index: number) => void;

/** What the server saw: one entry per request, the Range header (or undefined). */
let seen: Array<string | undefined> = [];
let handler: Handler;
let baseUrl = '';
const maxRequests = 30; // A runaway retry loop ends at a 404 instead of filling the disk.
const server = http.createServer((request, response) => {
	seen.push(request.headers.range);
	if (seen.length > maxRequests) {
		response.writeHead(404).end();
		return;
	}

	handler(request, response, seen.length - 1);
});

/** Serves `body`, honouring `Range: bytes=N-` unless told not to. */
const serve = (request: http.IncomingMessage, response: http.ServerResponse, options: {ignoreRange?: boolean; wrongRange?: boolean; cutAfter?: number; stallAfter?: number} = {}): void => {
	const match = /^bytes=(\d+)-$/.exec(request.headers.range ?? '');
	let start = 0;
	if (match && options.wrongRange) {
		response.writeHead(206, {'content-length': size, 'content-range': `bytes 0-${size - 1}/${size}`});
	} else if (match && !options.ignoreRange) {
		start = Number(match[1]);
		if (start >= size) {
			response.writeHead(416, {'content-range': `bytes */${size}`}).end();
			return;
		}

		response.writeHead(206, {'content-length': size - start, 'content-range': `bytes ${start}-${size - 1}/${size}`, 'accept-ranges': 'bytes'});
	} else {
		response.writeHead(200, {'content-length': size, 'accept-ranges': 'bytes'});
	}

	const stopAt = options.cutAfter ?? options.stallAfter;
	if (stopAt === undefined) {
		response.end(body.subarray(start));
		return;
	}

	// Send part of the body, then drop the connection (or go quiet) once it has been flushed.
	response.write(body.subarray(start, start + stopAt), () => {
		if (options.cutAfter !== undefined) {
			response.socket?.destroy();
		}
	});
};

const destIn = (name: string): string => path.join(root, name, 'builder.tar');
const fetchFast = async (options: Omit<FetchOptions, 'url' | 'sha256'> & Partial<FetchOptions> & FetchTuning): Promise<Awaited<ReturnType<typeof fetchVerified>>> =>
	fetchVerified({url: `${baseUrl}/builder.tar`, sha256: digest, backoffMs: 1, timeoutMs: 2000, ...options});

const rejectsWith = async (promise: Promise<unknown>, code: string, pattern: RegExp): Promise<UserError> => {
	let caught: unknown;
	await assert.rejects(promise, (error: unknown) => {
		caught = error;
		return true;
	});
	assert.ok(isUserError(caught), String(caught));
	assert.equal(caught.code, code);
	assert.match(caught.message, pattern);
	assert.ok(!caught.message.includes('\n'), 'one line');
	assert.ok(caught.hint && caught.hint.length > 0, 'has a hint');
	return caught;
};

before(async () => {
	await new Promise<void>(resolve => {
		server.listen(0, '127.0.0.1', resolve);
	});
	baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
	server.closeAllConnections();
	await new Promise(resolve => {
		server.close(resolve);
	});
	fs.rmSync(root, {recursive: true, force: true});
});

beforeEach(() => {
	seen = [];
	handler = (request, response) => {
		serve(request, response);
	};
});

test('downloads, verifies and renames into place, reporting progress', async () => {
	const dest = destIn('plain');
	const progress: Array<{transferred: number; total: number | undefined; percent: number | undefined}> = [];
	const result = await fetchFast({dest, onProgress: p => progress.push(p)});
	assert.deepEqual(result, {path: dest, bytes: size, resumed: false});
	assert.ok(fs.readFileSync(dest).equals(body));
	assert.equal(fs.existsSync(`${dest}.partial`), false);
	assert.deepEqual(seen, [undefined]);
	assert.deepEqual(progress.at(-1), {transferred: size, total: size, percent: 100});
});

test('a wrong checksum is rejected, the partial deleted and an existing dest left alone', async () => {
	const dest = destIn('mismatch');
	fs.mkdirSync(path.dirname(dest), {recursive: true});
	fs.writeFileSync(dest, 'the previous archive');
	const wrong = '0'.repeat(64);
	const error = await rejectsWith(fetchFast({dest, sha256: wrong}), 'E_CHECKSUM', /checksum mismatch/);
	assert.ok(error.message.includes(wrong) && error.message.includes(digest), 'names both digests');
	assert.equal(fs.readFileSync(dest, 'utf8'), 'the previous archive');
	assert.equal(fs.existsSync(`${dest}.partial`), false);
});

test('a connection cut mid-body is resumed with a Range request', async () => {
	const dest = destIn('cut');
	handler = (request, response, index) => {
		serve(request, response, index === 0 ? {cutAfter: 2 * 1024 * 1024} : {});
	};
	const result = await fetchFast({dest});
	assert.equal(seen.length, 2);
	assert.equal(seen[0], undefined);
	const from = Number(/^bytes=(\d+)-$/.exec(seen[1] ?? '')?.[1]);
	assert.ok(from > 0 && from <= 2 * 1024 * 1024, `resumed from ${seen[1]}`);
	assert.deepEqual(result, {path: dest, bytes: size, resumed: true});
	assert.ok(fs.readFileSync(dest).equals(body));
});

test('a server that ignores Range (200) makes the download start over cleanly', async () => {
	const dest = destIn('ignore-range');
	fs.mkdirSync(path.dirname(dest), {recursive: true});
	// A partial that is no prefix of the file: appending to it would fail the checksum.
	fs.writeFileSync(`${dest}.partial`, Buffer.alloc(1000, 7));
	handler = (request, response) => {
		serve(request, response, {ignoreRange: true});
	};
	const result = await fetchFast({dest});
	assert.deepEqual(seen, ['bytes=1000-']);
	assert.deepEqual(result, {path: dest, bytes: size, resumed: false});
	assert.ok(fs.readFileSync(dest).equals(body));
});

test('a cut followed by a server ignoring Range also starts over', async () => {
	const dest = destIn('cut-then-200');
	handler = (request, response, index) => {
		serve(request, response, index === 0 ? {cutAfter: 1024 * 1024} : {ignoreRange: true});
	};
	const result = await fetchFast({dest});
	assert.equal(seen.length, 2);
	assert.match(seen[1] ?? '', /^bytes=[1-9]\d*-$/);
	assert.deepEqual(result, {path: dest, bytes: size, resumed: false});
	assert.ok(fs.readFileSync(dest).equals(body));
});

test('a 206 for another range than asked is not appended: the download starts over', async () => {
	const dest = destIn('wrong-range');
	fs.mkdirSync(path.dirname(dest), {recursive: true});
	fs.writeFileSync(`${dest}.partial`, body.subarray(0, 1000));
	handler = (request, response) => {
		serve(request, response, {wrongRange: true});
	};
	let most = 0;
	const result = await fetchFast({dest, onProgress(p) {
		most = Math.max(most, p.transferred);
	}});
	assert.deepEqual(seen, ['bytes=1000-', undefined]);
	assert.equal(most, size, 'the body of the wrong range was never written');
	assert.deepEqual(result, {path: dest, bytes: size, resumed: false});
	assert.ok(fs.readFileSync(dest).equals(body));
});

test('a server that always ignores Range and always cuts at the same point uses up the retries', {timeout: 5000}, async () => {
	const dest = destIn('always-cut');
	handler = (request, response) => {
		serve(request, response, {ignoreRange: true, cutAfter: 64 * 1024});
	};
	await rejectsWith(fetchFast({dest, retries: 3}), 'E_DOWNLOAD', /failed after \d+ attempts/);
	// The first cut is progress (free); the next four (1 + 3 retries) make none.
	assert.equal(seen.length, 5);
	assert.ok(fs.statSync(`${dest}.partial`).size <= 64 * 1024, 'the partial never grows past what one answer sent');
});

test('HTTP 404 is a UserError naming status and URL, without retries', async () => {
	const dest = destIn('404');
	handler = (_request, response) => {
		response.writeHead(404).end('not here');
	};
	const error = await rejectsWith(fetchFast({dest}), 'E_DOWNLOAD', /HTTP 404/);
	assert.ok(error.message.includes(`${baseUrl}/builder.tar`), error.message);
	assert.equal(seen.length, 1);
	assert.equal(fs.existsSync(dest), false);
});

test('5xx answers are retried with backoff; past the retry limit it fails', async () => {
	const dest = destIn('503');
	handler = (request, response, index) => {
		if (index < 2) {
			response.writeHead(503).end();
			return;
		}

		serve(request, response);
	};
	const result = await fetchFast({dest});
	assert.equal(seen.length, 3);
	assert.equal(result.bytes, size);

	seen = [];
	handler = (_request, response) => {
		response.writeHead(500).end();
	};
	await rejectsWith(fetchFast({dest: destIn('500'), retries: 2}), 'E_DOWNLOAD', /after 3 attempts: HTTP 500/);
	assert.equal(seen.length, 3);
});

test('abort stops promptly, keeps the partial, and a second call resumes', async () => {
	const dest = destIn('abort');
	const controller = new AbortController();
	let abortedAt = 0;
	const progress: number[] = [];
	handler = (request, response) => {
		// Send 3 MiB, then go quiet (well within the 2 s idle timeout) and abort the download.
		serve(request, response, {stallAfter: 3 * 1024 * 1024});
		setTimeout(() => {
			abortedAt = performance.now();
			controller.abort();
		}, 300);
	};
	const first = fetchFast({dest, signal: controller.signal, onProgress: p => progress.push(p.transferred)});
	await rejectsWith(first, 'E_INTERRUPTED', /interrupted/);
	assert.ok(performance.now() - abortedAt < 200, 'stopped promptly');
	assert.equal(seen.length, 1, 'no retry after abort');
	assert.equal(progress.at(-1), 3 * 1024 * 1024, 'the bytes before the stall were reported');
	const kept = fs.statSync(`${dest}.partial`).size;
	assert.ok(kept > 0 && kept < size, `partial has ${kept} bytes`);
	assert.equal(fs.existsSync(dest), false);

	handler = (request, response) => {
		serve(request, response);
	};
	const result = await fetchFast({dest});
	assert.equal(seen.at(-1), `bytes=${kept}-`);
	assert.deepEqual(result, {path: dest, bytes: size, resumed: true});
	assert.ok(fs.readFileSync(dest).equals(body));
	assert.equal(fs.existsSync(`${dest}.partial`), false);
});

test('an already aborted signal makes no request', async () => {
	await rejectsWith(fetchFast({dest: destIn('pre-aborted'), signal: AbortSignal.abort()}), 'E_INTERRUPTED', /interrupted/);
	assert.equal(seen.length, 0);
});

test('a complete partial from an earlier run is verified and used without a request', async () => {
	const dest = destIn('complete-partial');
	fs.mkdirSync(path.dirname(dest), {recursive: true});
	fs.writeFileSync(`${dest}.partial`, body);
	const result = await fetchFast({dest});
	assert.deepEqual(result, {path: dest, bytes: size, resumed: true});
	assert.equal(seen.length, 0);
	assert.ok(fs.readFileSync(dest).equals(body));
});

test('bad input is a UserError before any request', async () => {
	const dest = destIn('bad-input');
	await rejectsWith(fetchFast({dest, sha256: 'abc'}), 'E_USAGE', /SHA-256/);
	await rejectsWith(fetchFast({dest, sha256: digest.toUpperCase()}), 'E_USAGE', /SHA-256/);
	await rejectsWith(fetchFast({dest, sha256: `sha256:${digest}`}), 'E_USAGE', /SHA-256/);
	await rejectsWith(fetchFast({dest, url: 'ftp://example.com/builder.tar'}), 'E_USAGE', /http\(s\) URL/);
	await rejectsWith(fetchFast({dest, url: 'not a url'}), 'E_USAGE', /http\(s\) URL/);
	await rejectsWith(fetchFast({dest, retries: -1}), 'E_USAGE', /retries/);
	assert.equal(seen.length, 0);
	assert.equal(fs.existsSync(path.dirname(dest)), false);
});
