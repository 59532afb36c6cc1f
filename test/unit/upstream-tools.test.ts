/**
 * Upstream tool tarballs (--buildkit, --binfmt): what is accepted, what is refused (each with a
 * one-line cause and a hint, exit 2, and nothing written), and that a different tarball gives a
 * different builder identity. Tarballs are written here byte by byte (ustar headers), so hostile
 * entries (links, devices, ../ paths, oversized members) are exactly what the test says.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type {AddressInfo} from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import {after, test} from 'node:test';
import {execa} from 'execa';
import {builderArchitecture, builderEngines, buildkitPin, distroInputHashFromEnv} from '../../src/builder-image/index.js';
import {distroInputHash} from '../../src/builder-image/recipe.js';
import {fileDigestsDir, memoisedSha256, openForHash, pruneFileDigests, sha256OfHandle, type FileHasher} from '../../src/runs/file-digests.js';
import {extractTool, obtainTool, planTool, type PlannedTool} from '../../src/builder-image/upstream-tools.js';
import {isUserError} from '../../src/errors.js';

// The tool tarballs of the environment (test/run.sh exports them for the e2e suite) must not steer these tests.
for (const name of ['EXOBUILD_BUILDKIT', 'EXOBUILD_BUILDKIT_SHA256', 'EXOBUILD_BINFMT', 'EXOBUILD_BINFMT_SHA256']) {
	delete process.env[name];
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-tools-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));
const bin = path.join(process.cwd(), 'bin', 'exobuild');
process.env['EXOBUILD_CACHE_DIR'] = path.join(root, 'cache');

interface Entry {
	readonly name: string;
	/** '0' file, '1' hardlink, '2' symlink, '3' char device, '5' directory. */
	readonly type?: string;
	readonly data?: Buffer;
	readonly linkname?: string;
	/** A size to claim in the header instead of data.length. */
	readonly size?: number;
}

const octal = (value: number, width: number): string => `${value.toString(8).padStart(width - 1, '0')}\0`;

/** A ustar archive of `entries`, gzipped. */
const tarball = (file: string, entries: readonly Entry[]): string => {
	const blocks: Buffer[] = [];
	for (const entry of entries) {
		const data = entry.data ?? Buffer.alloc(0);
		const header = Buffer.alloc(512);
		header.write(entry.name, 0, 100, 'utf8');
		header.write(octal(entry.type === '5' ? 0o755 : 0o755, 8), 100);
		header.write(octal(0, 8), 108);
		header.write(octal(0, 8), 116);
		header.write(octal(entry.size ?? data.length, 12), 124);
		header.write(octal(0, 12), 136);
		header.write(' '.repeat(8), 148);
		header.write(entry.type ?? '0', 156);
		header.write(entry.linkname ?? '', 157, 100, 'utf8');
		header.write('ustar\u000000', 257, 8, 'latin1');
		if (entry.type === '3') {
			header.write(octal(1, 8), 329);
			header.write(octal(3, 8), 337);
		}

		let sum = 0;
		for (const byte of header) {
			sum += byte;
		}

		header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
		blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
	}

	blocks.push(Buffer.alloc(1024));
	fs.writeFileSync(file, zlib.gzipSync(Buffer.concat(blocks)));
	return file;
};

const elfMachine: Record<string, number> = {amd64: 62, arm64: 183, arm: 40, ppc64le: 21, s390x: 22, riscv64: 243, '386': 3};

/** The first bytes of an ELF executable for `architecture`, then `text`. */
const elf = (text: string, architecture = builderArchitecture()): Buffer => {
	const header = Buffer.alloc(64);
	header.write('\x7fELF', 0, 'latin1');
	header[4] = 2;
	header[5] = architecture === 's390x' ? 2 : 1;
	if (header[5] === 2) {
		header.writeUInt16BE(elfMachine[architecture]!, 18);
	} else {
		header.writeUInt16LE(elfMachine[architecture]!, 18);
	}

	return Buffer.concat([header, Buffer.from(text)]);
};

const goodEntries: Entry[] = [
	{name: 'bin/', type: '5'},
	{name: 'bin/buildkitd', data: elf('buildkitd')},
	{name: 'bin/buildctl', data: elf('buildctl')},
	{name: 'bin/buildkit-runc', data: elf('runc')},
	{name: 'bin/buildkit-qemu-ppc64le', type: '2', linkname: 'buildkit-qemu-ppc64le-real'},
];

let counter = 0;
const fresh = (): {tree: string; scratch: string} => {
	counter++;
	const tree = path.join(root, `tree-${counter}`);
	const scratch = path.join(root, `scratch-${counter}`);
	fs.mkdirSync(tree);
	fs.mkdirSync(scratch);
	return {tree, scratch};
};

const filesUnder = (dir: string): string[] => fs.readdirSync(dir, {recursive: true, withFileTypes: true}).filter(entry => !entry.isDirectory()).map(entry => entry.name);

const refusedWith = async (promise: Promise<unknown>, pattern: RegExp, exitCode = 2): Promise<void> => {
	await assert.rejects(promise, (error: unknown) => {
		assert.ok(isUserError(error), String(error));
		assert.match(error.message, pattern);
		assert.doesNotMatch(error.message, /\n/, 'one line');
		assert.ok(error.hint, 'has a hint');
		assert.equal(error.exitCode, exitCode);
		return true;
	});
};

/** Plans `file` as BuildKit and extracts it into a fresh tree; returns the tree. */
const extract = async (file: string, options: {maxMemberBytes?: number} = {}): Promise<{tree: string; written: readonly string[]}> => {
	const planned = await planTool('buildkit', {source: file});
	const {tree, scratch} = fresh();
	const written = await extractTool(planned, file, tree, scratch, {architecture: builderArchitecture(), ...options});
	return {tree, written};
};

/** Plans and extracts `file`, which must be refused with `pattern`; nothing may be left in the tree or the scratch folder. */
const refusedTarball = async (file: string, pattern: RegExp, options: {maxMemberBytes?: number} = {}): Promise<void> => {
	const planned = await planTool('buildkit', {source: file});
	const {tree, scratch} = fresh();
	await refusedWith(extractTool(planned, file, tree, scratch, {architecture: builderArchitecture(), ...options}), pattern);
	assert.deepEqual(filesUnder(tree), [], 'nothing written');
	assert.deepEqual(filesUnder(scratch), [], 'the tarball copy is removed');
};

test('a release-style tarball: only bin/buildkitd and bin/buildctl are taken, as regular 0755 files; its version comes from its name', async () => {
	const file = tarball(path.join(root, 'buildkit-v0.32.2.linux-amd64.tar.gz'), goodEntries);
	const planned = await planTool('buildkit', {source: file});
	assert.equal(planned.ref.version, 'v0.32.2');
	assert.equal(planned.ref.sha256, crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex'));
	const {tree} = await extract(file);
	assert.deepEqual(filesUnder(tree).sort(), ['buildctl', 'buildkitd']);
	const daemon = path.join(tree, 'usr/bin/buildkitd');
	assert.equal(fs.lstatSync(daemon).mode & 0o777, 0o755);
	assert.ok(fs.lstatSync(daemon).isFile());
	assert.ok(fs.readFileSync(daemon).toString('latin1').endsWith('buildkitd'));
	assert.ok(fs.readFileSync(path.join(tree, 'usr/bin/buildctl')).toString('latin1').endsWith('buildctl'));
});

test('bad SHA-256 values are refused: not hex, or not the file\'s', async () => {
	const file = tarball(path.join(root, 'sha.tar.gz'), goodEntries);
	await refusedWith(planTool('buildkit', {source: file, sha256: 'sha256:abc'}), /--buildkit-sha256 sha256:abc is not a SHA-256 digest/);
	await refusedWith(planTool('buildkit', {source: file, sha256: '0'.repeat(64)}), /--buildkit .*sha\.tar\.gz: its SHA-256 is [\da-f]{64}, not 0{64}/);
	const right = crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
	assert.equal((await planTool('buildkit', {source: file, sha256: right.toUpperCase()})).ref.sha256, right);
});

test('URLs: http:// is refused, an https URL needs its SHA-256 unless it is the pinned official release', async () => {
	await refusedWith(planTool('buildkit', {source: 'http://example.com/buildkit-v0.32.2.linux-amd64.tar.gz', sha256: 'a'.repeat(64)}), /only https URLs are downloaded \(http is refused\)/);
	await refusedWith(planTool('binfmt', {source: 'ftp://example.com/binfmt.tar.gz'}), /--binfmt ftp:.*only https URLs/);
	await refusedWith(planTool('buildkit', {source: 'https://example.com/buildkit.tar.gz'}), /a download needs its SHA-256/);
	const withSha = await planTool('buildkit', {source: 'https://example.com/buildkit-v0.40.0.linux-amd64.tar.gz', sha256: 'b'.repeat(64)});
	assert.deepEqual(withSha.ref, {version: 'v0.40.0', sha256: 'b'.repeat(64)});
	assert.deepEqual(withSha.location, {kind: 'url', url: 'https://example.com/buildkit-v0.40.0.linux-amd64.tar.gz'});
	const pin = buildkitPin('amd64')!;
	assert.equal(pin.url, 'https://github.com/moby/buildkit/releases/download/v0.32.2/buildkit-v0.32.2.linux-amd64.tar.gz');
	assert.deepEqual((await planTool('buildkit', {source: pin.url})).ref, {version: 'v0.32.2', sha256: pin.sha256});
	await refusedWith(planTool('buildkit', {source: path.join(root, 'missing.tar.gz')}), /--buildkit .*missing\.tar\.gz: no such file/);
	await refusedWith(planTool('buildkit', {source: root}), /not a regular file/);
});

test('a tarball without bin/buildkitd is refused, and nothing is written', async () => {
	await refusedTarball(tarball(path.join(root, 'no-daemon.tar.gz'), [{name: 'bin/buildctl', data: elf('buildctl')}]), /the archive has no bin\/buildkitd/);
	await refusedTarball(tarball(path.join(root, 'binfmt-only.tar.gz'), [{name: 'bin/binfmt', data: elf('binfmt')}]), /has no bin\/buildkitd or bin\/buildctl/);
});

test('bin/buildkitd as a symlink, a hardlink or a device is refused, even after bin/buildctl was taken', async () => {
	const buildctl = {name: 'bin/buildctl', data: elf('buildctl')};
	await refusedTarball(tarball(path.join(root, 'symlink.tar.gz'), [buildctl, {name: 'bin/buildkitd', type: '2', linkname: '/etc/shadow'}]), /bin\/buildkitd is a SymbolicLink \(to \/etc\/shadow\), not a regular file/);
	await refusedTarball(tarball(path.join(root, 'hardlink.tar.gz'), [buildctl, {name: './bin/buildkitd', type: '1', linkname: 'bin/buildctl'}]), /bin\/buildkitd is a Link .*not a regular file/);
	await refusedTarball(tarball(path.join(root, 'device.tar.gz'), [buildctl, {name: 'bin/buildkitd', type: '3'}]), /bin\/buildkitd is a CharacterDevice, not a regular file/);
});

test('an oversized member, a path outside the archive, a duplicate, a foreign binary and a non-tar file are refused; nothing is written', async () => {
	await refusedTarball(tarball(path.join(root, 'big.tar.gz'), goodEntries), /bin\/buildkitd is \d+ bytes, more than the 16 allowed/, {maxMemberBytes: 16});
	await refusedTarball(tarball(path.join(root, 'dotdot.tar.gz'), [...goodEntries, {name: '../x', data: Buffer.from('x')}]), /the entry "\.\.\/x" names a path outside the archive/);
	await refusedTarball(tarball(path.join(root, 'inner-dotdot.tar.gz'), [{name: 'bin/../../bin/buildkitd', data: elf('x')}, ...goodEntries]), /names a path outside the archive/);
	await refusedTarball(tarball(path.join(root, 'absolute.tar.gz'), [...goodEntries, {name: '/usr/bin/buildkitd', data: elf('x')}]), /"\/usr\/bin\/buildkitd" names a path outside the archive/);
	await refusedTarball(tarball(path.join(root, 'twice.tar.gz'), [...goodEntries, {name: 'bin/buildkitd', data: elf('again')}]), /bin\/buildkitd appears twice/);
	const foreign = builderArchitecture() === 's390x' ? 'amd64' : 's390x';
	await refusedTarball(tarball(path.join(root, 'foreign.tar.gz'), [{name: 'bin/buildkitd', data: elf('x', foreign)}, {name: 'bin/buildctl', data: elf('y')}]), /bin\/buildkitd is built for another CPU/);
	await refusedTarball(tarball(path.join(root, 'script.tar.gz'), [{name: 'bin/buildkitd', data: Buffer.from('#!/bin/sh\n')}, {name: 'bin/buildctl', data: elf('y')}]), /bin\/buildkitd is not an ELF executable/);
	const notTar = path.join(root, 'not-a-tar.tar.gz');
	fs.writeFileSync(notTar, zlib.gzipSync(Buffer.from('this is not a tar archive at all, just text that is long enough to fill something')));
	await refusedTarball(notTar, /not a (valid|readable) tar archive/);
});

test('a tarball that changes after it was planned is refused (what is read is what was hashed)', async () => {
	const file = tarball(path.join(root, 'changing.tar.gz'), goodEntries);
	const planned = await planTool('buildkit', {source: file});
	tarball(file, [...goodEntries, {name: 'extra', data: Buffer.from('x')}]);
	const {tree, scratch} = fresh();
	await refusedWith(extractTool(planned, file, tree, scratch, {architecture: builderArchitecture()}), /its SHA-256 is now [\da-f]{64}, not/);
	assert.deepEqual(filesUnder(tree), []);
});

test('the builder identity: another tarball gives another input hash, and so does adding binfmt; none is no tool', async () => {
	const recipe = 'c'.repeat(64);
	const first = tarball(path.join(root, 'first.tar.gz'), goodEntries);
	const second = tarball(path.join(root, 'second.tar.gz'), [...goodEntries, {name: 'README', data: Buffer.from('another build')}]);
	const a = await planTool('buildkit', {source: first});
	const b = await planTool('buildkit', {source: second});
	assert.notEqual(a.ref.sha256, b.ref.sha256);
	const hashes = [
		distroInputHash(recipe, {}),
		distroInputHash(recipe, {buildkit: a.ref}),
		distroInputHash(recipe, {buildkit: b.ref}),
		distroInputHash(recipe, {buildkit: a.ref, binfmt: {version: 'v1', sha256: 'd'.repeat(64)}}),
		distroInputHash(recipe, {binfmt: {version: 'v1', sha256: 'd'.repeat(64)}}),
	];
	assert.equal(new Set(hashes).size, hashes.length, 'all different');
	assert.equal(distroInputHash(recipe, {buildkit: {...a.ref, version: 'renamed'}}), hashes[1], 'the version is a label, the SHA-256 the identity');

	// The environment names the builder a build uses the same way.
	const fromEnv = async (env: NodeJS.ProcessEnv): Promise<string | undefined> => distroInputHashFromEnv(undefined, env);
	assert.equal(await fromEnv({}), undefined, 'nothing asked for: any current distro builder');
	const withA = await fromEnv({EXOBUILD_BUILDKIT: first});
	assert.notEqual(withA, await fromEnv({EXOBUILD_BUILDKIT: second}));
	assert.notEqual(withA, await fromEnv({EXOBUILD_BUILDKIT: first, EXOBUILD_BINFMT: first}));
	assert.equal(await fromEnv({EXOBUILD_BUILDKIT: 'none'}), await fromEnv({EXOBUILD_BINFMT: 'none'}), 'none: the builder without tools');
	await refusedWith(fromEnv({EXOBUILD_BUILDKIT: first, EXOBUILD_BUILDKIT_SHA256: 'e'.repeat(64)}), /its SHA-256 is [\da-f]{64}, not e{64}/);
});

test('builderEngines: containerfile has BuildKit; distro has buildah, and BuildKit when it carries it', () => {
	assert.deepEqual(builderEngines({kind: 'containerfile'}), ['buildkit']);
	assert.deepEqual(builderEngines({kind: 'distro'}), ['buildah']);
	assert.deepEqual(builderEngines({kind: 'distro', buildkit: {version: 'v0.32.2', sha256: 'a'.repeat(64)}}), ['buildkit', 'buildah']);
});

test('a URL is downloaded into the cache once, checked against its SHA-256; a wrong one is deleted', async () => {
	const file = tarball(path.join(root, 'served.tar.gz'), goodEntries);
	const body = fs.readFileSync(file);
	let requests = 0;
	const server = http.createServer((_request, response) => {
		requests++;
		response.writeHead(200, {'content-length': body.length}).end(body);
	});
	await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
	try {
		const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/buildkit-v0.32.2.linux-amd64.tar.gz`;
		const sha256 = crypto.createHash('sha256').update(body).digest('hex');
		// planTool refuses http; the download itself is what is tested here, on loopback.
		const planned: PlannedTool = {name: 'buildkit', ref: {version: 'v0.32.2', sha256}, location: {kind: 'url', url}, byDefault: false};
		const downloads = path.join(root, 'cache', 'downloads');
		const first = await obtainTool(planned, downloads);
		assert.equal(first, path.join(downloads, `${sha256}.tar.gz`));
		assert.deepEqual(fs.readFileSync(first), body);
		assert.equal(await obtainTool(planned, downloads), first);
		assert.equal(requests, 1, 'the second time it is taken from the cache');
		fs.appendFileSync(first, 'changed in the cache');
		assert.deepEqual(fs.readFileSync(await obtainTool(planned, downloads)), body, 'a changed cached copy is fetched again');
		assert.equal(requests, 2);
		const {tree, scratch} = fresh();
		await extractTool(planned, first, tree, scratch, {architecture: builderArchitecture()});
		assert.deepEqual(filesUnder(tree).sort(), ['buildctl', 'buildkitd']);

		const wrong: PlannedTool = {...planned, ref: {version: 'v0.32.2', sha256: 'f'.repeat(64)}};
		await refusedWith(obtainTool(wrong, downloads), /checksum mismatch/, 1);
		assert.deepEqual(fs.readdirSync(downloads).filter(name => name.startsWith('f')), [], 'the bad download is deleted');
	} finally {
		server.close();
	}
});

test('exobuild builder build refuses bad tool input at once: one line, a hint, exit 2', async () => {
	const env = {EXOBUILD_CACHE_DIR: path.join(root, 'cli-cache'), EXOBUILD_DEBIAN_MIRROR: 'http://127.0.0.1:9/nothing-here'};
	const run = async (args: readonly string[], extra: Record<string, string> = {}) => execa(bin, ['builder', 'build', '--recipe', 'distro', ...args], {reject: false, env: {...env, ...extra}, timeout: 30_000});
	const cases: Array<[readonly string[], Record<string, string>, RegExp]> = [
		[['--buildkit', 'http://example.com/buildkit.tar.gz', '--buildkit-sha256', 'a'.repeat(64)], {}, /only https URLs are downloaded/],
		[['--buildkit-sha256', 'a'.repeat(64)], {}, /--buildkit-sha256 without --buildkit/],
		[[], {EXOBUILD_BINFMT: path.join(root, 'nope.tar.gz')}, /--binfmt .*nope\.tar\.gz: no such file/],
		[['--buildkit', tarball(path.join(root, 'cli-symlink.tar.gz'), [{name: 'bin/buildkitd', type: '2', linkname: 'x'}, {name: 'bin/buildctl', data: elf('y')}])], {}, /bin\/buildkitd is a SymbolicLink/],
	];
	for (const [args, extra, pattern] of cases) {
		const result = await run(args, extra);
		assert.equal(result.exitCode, 2, `${args.join(' ')}: ${result.stderr}`);
		const lines = result.stderr.trim().split('\n').filter(line => !/^(Take|Debian packages)|the agent registers the QEMU handlers itself/.test(line));
		assert.equal(lines.length, 2, result.stderr);
		assert.match(lines[0]!, pattern);
		assert.match(lines[1]!, /^hint: /);
		assert.equal(result.stdout, '');
	}

	const store = path.join(env.EXOBUILD_CACHE_DIR, 'builder-images');
	assert.deepEqual(fs.existsSync(store) ? fs.readdirSync(store).filter(name => name.endsWith('.tar')) : [], [], 'no builder stored');
});

test('a tool tarball\'s hash is kept in the cache by the file\'s identity: a second lookup does not read it, a touched or rewritten file is hashed again', async () => {
	const file = tarball(path.join(root, 'memo.tar.gz'), goodEntries);
	let reads = 0;
	const counting: FileHasher = async (handle, size) => {
		reads++;
		return sha256OfHandle(handle, size);
	};

	const lookup = async (options: {racyMarginMs?: number} = {racyMarginMs: 0}): Promise<string> => {
		const handle = await openForHash(file);
		try {
			return await memoisedSha256(handle, file, {hasher: counting, ...options});
		} finally {
			await handle.close();
		}
	};

	const sha = (): string => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
	// Just written: racy with the default margin (2 s), so it is hashed each time and not recorded.
	assert.equal(await lookup({}), sha());
	assert.equal(await lookup({}), sha());
	assert.equal(reads, 2, 'a file changed within the racy margin is hashed again');
	assert.equal(fs.existsSync(fileDigestsDir()) ? fs.readdirSync(fileDigestsDir()).length : 0, 0, 'and not recorded');

	assert.equal(await lookup(), sha());
	assert.equal(reads, 3);
	const records = fs.readdirSync(fileDigestsDir());
	assert.equal(records.length, 1);
	const record = JSON.parse(fs.readFileSync(path.join(fileDigestsDir(), records[0]!), 'utf8')) as {sha256: string; path: string; identity: Record<string, string>};
	assert.equal(record.sha256, sha());
	assert.equal(record.path, file);
	assert.equal(record.identity['ino'], String(fs.statSync(file).ino));
	assert.equal(await lookup(), sha());
	assert.equal(reads, 3, 'the second lookup takes the record and does not read the file');

	// touch: same bytes, new mtime and ctime.
	const later = new Date(Date.now() + 60_000);
	fs.utimesSync(file, later, later);
	assert.equal(await lookup(), sha());
	assert.equal(reads, 4, 'a touched file is hashed again');
	assert.equal(await lookup(), sha());
	assert.equal(reads, 4);

	// Rewritten in place (same inode, other bytes): its identity changes and the new bytes are hashed.
	const before = sha();
	const inode = fs.statSync(file).ino;
	tarball(file, [...goodEntries, {name: 'README', data: Buffer.from('rewritten')}]);
	assert.notEqual(sha(), before);
	assert.equal(fs.statSync(file).ino, inode, 'the same inode');
	assert.equal(await lookup(), sha());
	assert.equal(reads, 5, 'a rewritten file is hashed again');

	// A record that does not parse is set aside (with a warning) and the file hashed again.
	fs.writeFileSync(path.join(fileDigestsDir(), records[0]!), '{"sha256": 1}');
	assert.equal(await lookup(), sha());
	assert.equal(reads, 6);
	assert.ok(fs.readdirSync(fileDigestsDir()).some(name => name.includes('.corrupt-')), 'the bad record is set aside');

	// planTool uses the record: same hash as the file's.
	assert.equal((await planTool('buildkit', {source: file})).ref.sha256, sha());
});

test('prune drops the remembered digests of files that are gone or changed, and keeps the others', async () => {
	const remember = async (file: string): Promise<void> => {
		const handle = await openForHash(file);
		try {
			await memoisedSha256(handle, file, {racyMarginMs: 0});
		} finally {
			await handle.close();
		}
	};

	const recordedPaths = (): string[] => fs.readdirSync(fileDigestsDir()).filter(name => name.endsWith('.json'))
		.map(name => (JSON.parse(fs.readFileSync(path.join(fileDigestsDir(), name), 'utf8')) as {path: string}).path);
	const kept = tarball(path.join(root, 'prune-kept.tar.gz'), goodEntries);
	const gone = tarball(path.join(root, 'prune-gone.tar.gz'), [...goodEntries, {name: 'gone', data: Buffer.from('x')}]);
	const changed = tarball(path.join(root, 'prune-changed.tar.gz'), [...goodEntries, {name: 'changed', data: Buffer.from('y')}]);
	for (const file of [kept, gone, changed]) {
		await remember(file);
	}

	assert.deepEqual([kept, gone, changed].filter(file => recordedPaths().includes(file)), [kept, gone, changed]);
	fs.rmSync(gone);
	fs.appendFileSync(changed, 'more');
	assert.ok(await pruneFileDigests() >= 2);
	assert.deepEqual([kept, gone, changed].filter(file => recordedPaths().includes(file)), [kept], 'only the unchanged file keeps its record');
	assert.equal(await pruneFileDigests(), 0);
});

test('a file-digests folder that is a symlink is set aside, never followed: a record planted behind it is not used', async () => {
	const file = tarball(path.join(root, 'planted.tar.gz'), goodEntries);
	let reads = 0;
	const lookup = async (): Promise<string> => {
		const handle = await openForHash(file);
		try {
			return await memoisedSha256(handle, file, {racyMarginMs: 0, hasher: async (opened, size) => {
				reads++;
				return sha256OfHandle(opened, size);
			}});
		} finally {
			await handle.close();
		}
	};

	const real = await lookup();
	assert.equal(reads, 1);
	// Plant a forged record (same name, same identity, another digest) in a folder the cache's file-digests/ links to.
	const elsewhere = path.join(root, 'elsewhere');
	fs.cpSync(fileDigestsDir(), elsewhere, {recursive: true});
	for (const name of fs.readdirSync(elsewhere).filter(name => name.endsWith('.json'))) {
		const record = JSON.parse(fs.readFileSync(path.join(elsewhere, name), 'utf8')) as {path: string; sha256: string};
		if (record.path === file) {
			fs.writeFileSync(path.join(elsewhere, name), JSON.stringify({...record, sha256: 'e'.repeat(64)}));
		}
	}

	fs.rmSync(fileDigestsDir(), {recursive: true});
	fs.symlinkSync(elsewhere, fileDigestsDir());
	assert.equal(await lookup(), real, 'the planted digest is not taken');
	assert.equal(reads, 2, 'the file is hashed');
	assert.ok(!fs.lstatSync(fileDigestsDir()).isSymbolicLink(), 'the symlink was set aside');
	assert.ok(fs.readdirSync(path.dirname(fileDigestsDir())).some(name => name.startsWith('file-digests.unsafe-')));
});
