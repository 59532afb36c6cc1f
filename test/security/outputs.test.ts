/**
 * File outputs (`-o type=oci|docker|tar,dest=FILE`, `dest=-`, `--iidfile`, `--metadata-file`, the
 * `oci,tar=false` folder) are written as buildx writes them and never replace what they must
 * not: a device or FIFO is written through, a symlink is followed (the link stays), a folder,
 * block device, socket or unwritable folder is refused before the build, a full filesystem is
 * a one-line error naming the folder with the previous file intact, and a partial left by a
 * SIGKILL is reaped by the next run.
 */
import assert from 'node:assert/strict';
import {execFileSync, spawn} from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {execa} from 'execa';
import * as tar from 'tar';
import {isUserError} from '../../src/errors.js';
import {blobPath, LayoutWriter, mediaTypes, type Descriptor} from '../../src/oci/index.js';
import {writeOutput, type OutputTarget} from '../../src/outputs/index.js';
import {reapPartials} from '../../src/runs/partials.js';
import {exobuild, exobuildEnv, failure, fixturesDir, repoRoot} from '../e2e/helpers.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {makeVictim} from './victim.js';

/** Some cases make device nodes, mount a tmpfs or chown: root only (as a normal user they are skipped, saying why). */
const asRoot = process.getuid?.() === 0;

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-sec-outputs-'));
// Partials of this process are recorded in a cache of its own (runsDir() is read at each use).
const cache = path.join(work, 'cache');
process.env['EXOBUILD_CACHE_DIR'] = cache;
const mounts: string[] = [];
after(async () => {
	for (const mount of mounts.reverse()) {
		await execa('umount', ['-l', mount], {reject: false});
	}

	fs.rmSync(work, {recursive: true, force: true});
});

const partialName = /^\..+\.[\da-f]{8}\.partial$/;
const partialsIn = (dir: string): string[] => fs.readdirSync(dir).filter(name => partialName.test(name) || name.endsWith('.staging'));

let counter = 0;
const fresh = (name: string): string => {
	const dir = path.join(work, `${name}-${counter++}`);
	fs.mkdirSync(dir, {recursive: true});
	return dir;
};

/** A tar (then gzipped by LayoutWriter) holding `files`. */
const layerTar = (files: Record<string, Buffer | string>): string => {
	const dir = fresh('layer-src');
	for (const [name, content] of Object.entries(files)) {
		fs.writeFileSync(path.join(dir, name), content);
	}

	const file = `${dir}.tar`;
	tar.c({sync: true, file, cwd: dir, portable: true, mtime: new Date(0)}, Object.keys(files));
	return file;
};

/** A one-platform (amd64) layout with a real layer holding `files`: every writer can export it. */
const smallLayout = async (files: Record<string, Buffer | string> = {'hello.txt': 'hello\n'}): Promise<string> => {
	const dir = fresh('layout');
	const writer = new LayoutWriter(dir);
	await writer.finish(await writer.addImage({layers: [layerTar(files)], architecture: 'amd64'}));
	return dir;
};

/** A layout whose oci archive is about `bytes` long: one extra random blob listed as a layer (type=oci does not unpack layers). */
const bigOciLayout = async (bytes: number): Promise<string> => {
	const dir = fresh('big-layout');
	const writer = new LayoutWriter(dir);
	const image = await writer.addImage({layers: [layerTar({'hello.txt': 'hello\n'})], architecture: 'amd64'});
	const manifest = JSON.parse(fs.readFileSync(blobPath(dir, image.digest), 'utf8')) as {config: Descriptor; layers: Descriptor[]};
	const big = await writer.addBlob(crypto.randomBytes(bytes), mediaTypes.layerGzip);
	await writer.finish(await writer.addBlob(JSON.stringify({...manifest, layers: [...manifest.layers, big]}), mediaTypes.manifest));
	return dir;
};

const fileTargets = (dest: string): OutputTarget[] => [{type: 'oci', dest}, {type: 'docker', dest}, {type: 'tar', dest}];

/** What a writer puts in a regular file: the bytes a device or FIFO must receive. */
const bytesOf = async (layout: string, target: OutputTarget): Promise<Buffer> => {
	const file = path.join(fresh('expected'), 'out');
	await writeOutput(layout, {...target, dest: file} as OutputTarget);
	return fs.readFileSync(file);
};

const withTimeout = async <T>(promise: Promise<T>, ms: number, what: string): Promise<T> => {
	let timer: NodeJS.Timeout | undefined;
	try {
		return await Promise.race([promise, new Promise<never>((_resolve, reject) => {
			timer = setTimeout(() => reject(new Error(`${what}: no end after ${ms} ms`)), ms);
		})]);
	} finally {
		clearTimeout(timer);
	}
};

const mknod = async (file: string, kind: 'c' | 'b', major: number, minor: number): Promise<fs.Stats> => {
	await execa('mknod', ['-m', '666', file, kind, String(major), String(minor)]);
	return fs.lstatSync(file);
};

/** Restores the host's /dev/null if a broken build replaced it (the check must never cost the machine its /dev/null). */
const guardDevNull = (): (() => void) => {
	const before = fs.lstatSync('/dev/null');
	return () => {
		const now = fs.lstatSync('/dev/null');
		if (!now.isCharacterDevice() || now.rdev !== before.rdev) {
			fs.rmSync('/dev/null', {force: true});
			execFileSync('mknod', ['-m', '666', '/dev/null', 'c', '1', '3']);
		}
	};
};

/** Restores the host's /dev/stdout symlink if a broken build replaced it (main did: a regular file holding the digest). */
const guardDevStdout = (): (() => void) => {
	const target = fs.readlinkSync('/dev/stdout');
	return () => {
		if (!fs.lstatSync('/dev/stdout').isSymbolicLink()) {
			fs.rmSync('/dev/stdout', {force: true});
			fs.symlinkSync(target, '/dev/stdout');
		}
	};
};

const tmpfs = async (size: string, options = ''): Promise<string> => {
	const dir = fresh('tmpfs');
	await execa('mount', ['-t', 'tmpfs', '-o', `size=${size}${options ? `,${options}` : ''}`, 'tmpfs', dir]);
	mounts.push(dir);
	return dir;
};

const unmount = async (dir: string): Promise<void> => {
	await execa('umount', [dir]);
	mounts.splice(mounts.indexOf(dir), 1);
};

test('a character device dest (oci, docker, tar) is written through: it stays the same device, and so does /dev/null', {skip: asRoot ? false : 'mknod of a character device needs root'}, async () => {
	const victim = makeVictim();
	const layout = await smallLayout();
	const dev = path.join(fresh('dev'), 'null');
	const made = await mknod(dev, 'c', 1, 3);
	for (const target of fileTargets(dev)) {
		await writeOutput(layout, target);
		const now = fs.lstatSync(dev);
		assert.ok(now.isCharacterDevice(), `type=${target.type} replaced the device with something else`);
		assert.equal(now.rdev, made.rdev);
		assert.deepEqual(partialsIn(path.dirname(dev)), []);
	}

	// The finding's own case, only once the private device above survived every writer.
	const restore = guardDevNull();
	const before = fs.lstatSync('/dev/null');
	try {
		await writeOutput(layout, {type: 'oci', dest: '/dev/null'});
		const now = fs.lstatSync('/dev/null');
		assert.ok(now.isCharacterDevice(), '/dev/null is no longer a character device');
		assert.equal(now.rdev, before.rdev);
		assert.equal(now.ino, before.ino, '/dev/null was replaced');
		assert.deepEqual(partialsIn('/dev'), []);
	} finally {
		restore();
	}

	victim.assertUnchanged();
	victim.remove();
});

test('a FIFO dest gets the archive\'s bytes through a reader and is still a FIFO', async () => {
	const victim = makeVictim();
	const layout = await smallLayout();
	const folder = fresh('fifo');
	const fifo = path.join(folder, 'pipe');
	await execa('mkfifo', [fifo]);
	for (const target of fileTargets(fifo)) {
		const expected = await bytesOf(layout, target);
		const reader = execa('cat', [fifo], {encoding: 'buffer', reject: false});
		try {
			await withTimeout(writeOutput(layout, target), 20_000, `type=${target.type} into a FIFO`);
			const read = await withTimeout(reader, 20_000, 'the FIFO\'s reader');
			assert.equal(read.exitCode, 0);
			assert.ok(Buffer.from(read.stdout).equals(expected), `type=${target.type}: the reader got ${read.stdout.length} bytes, the archive has ${expected.length}`);
		} finally {
			reader.kill('SIGKILL');
		}

		assert.ok(fs.lstatSync(fifo).isFIFO(), `type=${target.type} replaced the FIFO`);
		assert.deepEqual(partialsIn(folder), []);
	}

	victim.assertUnchanged();
	victim.remove();
});

test('a symlink dest is followed (relative, chained, dangling): the target is written, the link stays a link', async () => {
	const victim = makeVictim();
	const layout = await smallLayout();
	const folder = fresh('links');
	fs.mkdirSync(path.join(folder, 'real'));
	fs.writeFileSync(path.join(folder, 'real', 'image.tar'), 'previous');
	fs.symlinkSync('real/image.tar', path.join(folder, 'link.tar'));
	fs.symlinkSync('link.tar', path.join(folder, 'chain.tar'));
	fs.symlinkSync('real/new.tar', path.join(folder, 'dangling.tar'));
	for (const [link, target] of [['link.tar', 'real/image.tar'], ['chain.tar', 'real/image.tar'], ['dangling.tar', 'real/new.tar']] as const) {
		const linkPath = path.join(folder, link);
		const linkTarget = fs.readlinkSync(linkPath);
		await writeOutput(layout, {type: 'tar', dest: linkPath});
		assert.ok(fs.lstatSync(linkPath).isSymbolicLink(), `${link} was replaced`);
		assert.equal(fs.readlinkSync(linkPath), linkTarget);
		const names: string[] = [];
		await tar.t({file: path.join(folder, target), onReadEntry: entry => names.push(entry.path)});
		assert.ok(names.includes('hello.txt'), `${target} holds ${names.join(', ')}`);
	}

	assert.deepEqual(partialsIn(folder), []);
	assert.deepEqual(partialsIn(path.join(folder, 'real')), []);
	victim.assertUnchanged();
	victim.remove();
});

test('a replaced file keeps its permissions and owner (buildx truncates and writes it), never a setuid bit', {skip: asRoot ? false : 'giving the file another owner (chown) needs root'}, async () => {
	const victim = makeVictim();
	const layout = await smallLayout();
	const folder = fresh('modes');
	const dest = path.join(folder, 'image.tar');
	fs.writeFileSync(dest, 'previous');
	fs.chmodSync(dest, 0o4640);
	fs.chownSync(dest, 1234, 5678);
	await writeOutput(layout, {type: 'oci', dest});
	const stat = fs.lstatSync(dest);
	assert.ok(stat.isFile());
	assert.equal(stat.mode & 0o7777, 0o640);
	assert.deepEqual([stat.uid, stat.gid], [1234, 5678]);
	assert.notEqual(fs.readFileSync(dest, 'utf8'), 'previous');
	assert.deepEqual(fs.readdirSync(folder), ['image.tar']);
	victim.assertUnchanged();
	victim.remove();
});

test('a full filesystem: exit 1 naming the folder, the previous file byte for byte intact, no partial left', {skip: asRoot ? false : 'mounting a tmpfs needs root'}, async () => {
	const victim = makeVictim();
	const oci = await bigOciLayout(2 * 1024 * 1024);
	const rootfs = await smallLayout({'random.bin': crypto.randomBytes(2 * 1024 * 1024)});
	const full = await tmpfs('1m');
	try {
		const dest = path.join(full, 'image.tar');
		const previous = crypto.randomBytes(200 * 1024);
		fs.writeFileSync(dest, previous);
		for (const [layout, target] of [[oci, {type: 'oci', dest}], [rootfs, {type: 'docker', dest}], [rootfs, {type: 'tar', dest}]] as const) {
			await assert.rejects(writeOutput(layout, target), (error: unknown) => {
				assert.ok(isUserError(error), `type=${target.type}: not a UserError: ${String(error)}`);
				assert.equal(error.exitCode, 1);
				assert.equal(error.code, 'E_NO_SPACE');
				assert.ok(error.message.includes(full), `type=${target.type}: "${error.message}" does not name ${full}`);
				assert.doesNotMatch(error.message, /\n/);
				return true;
			});
			assert.ok(fs.readFileSync(dest).equals(previous), `type=${target.type} changed the previous file`);
			assert.deepEqual(fs.readdirSync(full), ['image.tar'], `type=${target.type} left something`);
		}
	} finally {
		await unmount(full);
	}

	victim.assertUnchanged();
	victim.remove();
});

/**
 * Starts a child that writes a large type=oci archive to `dest` (on SIGTERM it runs the exit
 * cleanups, as the CLI does, and exits 143); sends it `signal` while the partial exists.
 * Returns the partial's path.
 */
const killWhileWriting = async (layout: string, dest: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<string> => {
	const script = path.join(work, 'write-output.mjs');
	fs.writeFileSync(script, [
		`import {writeOutput} from ${JSON.stringify(path.join(repoRoot, 'dist', 'src', 'outputs', 'index.js'))};`,
		`import {runExitCleanups} from ${JSON.stringify(path.join(repoRoot, 'dist', 'src', 'runs', 'exit-cleanups.js'))};`,
		'process.on(\'SIGTERM\', () => void runExitCleanups().then(() => process.exit(143)));',
		'await writeOutput(process.argv[2], {type: \'oci\', dest: process.argv[3]});',
		'',
	].join('\n'));
	for (let attempt = 0; attempt < 5; attempt++) {
		fs.writeFileSync(dest, 'previous'); // again, if the last attempt finished writing before the signal
		const child = spawn(process.execPath, [script, layout, dest], {stdio: 'ignore', env: {...process.env, EXOBUILD_CACHE_DIR: cache}});
		const exited = new Promise<number | null>(resolve => {
			child.once('exit', code => resolve(code));
		});
		let partial: string | undefined;
		let done = false;
		void exited.then(() => {
			done = true;
		});
		while (!done && partial === undefined) {
			const name = fs.readdirSync(path.dirname(dest)).find(entry => partialName.test(entry) && (fs.statSync(path.join(path.dirname(dest), entry), {throwIfNoEntry: false})?.size ?? 0) > 1024 * 1024);
			if (name === undefined) {
				await new Promise(resolve => setTimeout(resolve, 2));
			} else {
				partial = path.join(path.dirname(dest), name);
				child.kill(signal);
			}
		}

		const code = await exited;
		if (partial !== undefined && (signal === 'SIGKILL' ? fs.existsSync(partial) : code === 143)) {
			return partial;
		}
	}

	throw new Error(`the child finished writing before ${signal} reached it, five times`);
};

test('a run SIGKILLed while writing a large output leaves a partial that the next run (and reapPartials) removes', async () => {
	const victim = makeVictim();
	const layout = await bigOciLayout(96 * 1024 * 1024);
	const folder = fresh('killed');
	const dest = path.join(folder, 'image.tar');

	const first = await killWhileWriting(layout, dest);
	assert.match(path.basename(first), /^\.image\.tar\.[\da-f]{8}\.partial$/);
	const prune = await exobuild(['prune'], {env: {EXOBUILD_CACHE_DIR: cache}});
	assert.equal(prune.exitCode, 0, failure(prune));
	assert.ok(!fs.existsSync(first), `exobuild prune left ${first}`);
	assert.match(String(prune.stdout), new RegExp(`partial ${first.replaceAll('.', '\\.')}`));

	const second = await killWhileWriting(layout, dest);
	assert.deepEqual(await reapPartials(), [second]);
	assert.ok(!fs.existsSync(second));
	assert.equal(fs.readFileSync(dest, 'utf8'), 'previous', 'the destination was touched');
	assert.deepEqual(fs.readdirSync(folder), ['image.tar']);
	assert.deepEqual(fs.readdirSync(path.join(cache, 'runs')).filter(name => name.endsWith('.partials')), [], 'the dead runs\' records were removed');
	victim.assertUnchanged();
	victim.remove();
});

test('a signal while writing removes the partial (the exit cleanups know it); the destination is untouched', async () => {
	const victim = makeVictim();
	const layout = await bigOciLayout(96 * 1024 * 1024);
	const folder = fresh('signalled');
	const dest = path.join(folder, 'image.tar');
	const partial = await killWhileWriting(layout, dest, 'SIGTERM');
	assert.ok(!fs.existsSync(partial), `${partial} was left`);
	assert.equal(fs.readFileSync(dest, 'utf8'), 'previous');
	assert.deepEqual(fs.readdirSync(folder), ['image.tar']);
	victim.assertUnchanged();
	victim.remove();
});

// Through the CLI: refusals happen while the request is validated, before anything starts. Each
// runs with an empty cache: a refusal that came later would first make a builder image there.
const refusalContext = (): string => {
	const dir = fresh('refusal-ctx');
	fs.writeFileSync(path.join(dir, 'Dockerfile'), 'FROM busybox\nRUN true\n');
	return dir;
};

const assertRefusedEarly = async (args: readonly string[], cause: RegExp): Promise<void> => {
	const emptyCache = fresh('empty-cache');
	const started = Date.now();
	const result = await execa(path.join(repoRoot, 'bin', 'exobuild'), ['build', '--platform', 'linux/amd64', ...args, refusalContext()], {
		reject: false, all: true, timeout: 60_000, env: {EXOBUILD_CACHE_DIR: emptyCache, CI: '1'},
	});
	assert.equal(result.exitCode, 2, `${args.join(' ')}: ${result.all}`);
	const lines = String(result.stderr).trim().split('\n');
	assert.equal(lines.length, 2, String(result.stderr));
	assert.match(lines[0]!, cause);
	assert.match(lines[1]!, /^hint: /);
	assert.deepEqual(fs.readdirSync(emptyCache), [], `${args.join(' ')}: something started before the refusal`);
	assert.ok(Date.now() - started < 20_000, 'the refusal took the time of a build');
};

test('a folder, block device or socket dest, and an unwritable folder, are refused with exit 2 before anything starts', {skip: asRoot ? false : 'mknod of a block device and a read-only tmpfs need root'}, async () => {
	const victim = makeVictim();
	const folder = fresh('refused');
	const socketPath = path.join(folder, 'sock');
	const server = net.createServer();
	await new Promise<void>(resolve => {
		server.listen(socketPath, resolve);
	});
	const readOnly = await tmpfs('1m', 'ro');
	try {
		await mknod(path.join(folder, 'block'), 'b', 7, 250);
		fs.mkdirSync(path.join(folder, 'dir'));
		fs.symlinkSync('dir', path.join(folder, 'dir-link'));
		fs.writeFileSync(path.join(folder, 'dir', 'precious'), 'precious');
		await assertRefusedEarly(['-o', `type=oci,dest=${path.join(folder, 'dir')}`], /is a folder/);
		await assertRefusedEarly(['-o', `type=docker,dest=${path.join(folder, 'dir-link')}`], /is a folder/);
		await assertRefusedEarly(['-o', `type=tar,dest=${path.join(folder, 'block')}`], /block device/);
		await assertRefusedEarly(['-o', `type=oci,dest=${socketPath}`], /socket/);
		await assertRefusedEarly(['-o', 'type=oci,dest=/proc/x.tar'], /\/proc/);
		await assertRefusedEarly(['-o', `type=tar,dest=${path.join(readOnly, 'x.tar')}`], new RegExp(readOnly));
		await assertRefusedEarly(['-o', 'type=oci,dest=-', '--iidfile', '/proc/iid'], /\/proc/);
		await assertRefusedEarly(['--metadata-file', path.join(folder, 'dir')], /is a folder/);
		await assertRefusedEarly(['--iidfile', path.join(readOnly, 'iid')], new RegExp(readOnly));
		// The oci layout folder replaces its dest whole: a folder that holds something else is not taken.
		await assertRefusedEarly(['-o', `type=oci,tar=false,dest=${path.join(folder, 'dir')}`], /not an OCI layout/);
		assert.equal(fs.readFileSync(path.join(folder, 'dir', 'precious'), 'utf8'), 'precious');
		assert.ok(fs.lstatSync(path.join(folder, 'block')).isBlockDevice());
		assert.ok(fs.lstatSync(socketPath).isSocket());
		assert.deepEqual(fs.readdirSync(readOnly), []);
	} finally {
		server.close();
		await unmount(readOnly);
	}

	victim.assertUnchanged();
	victim.remove();
});

// Real builds through the CLI (a busybox base, the native platform).
let baseLayout: Promise<string> | undefined;
const buildContext = (): string => {
	const dir = fresh('ctx');
	fs.writeFileSync(path.join(dir, 'Dockerfile'), 'FROM busybox\nRUN echo hi > /hi.txt\n');
	return dir;
};

const build = async (args: readonly string[]) => {
	baseLayout ??= busyboxLayout(['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/arm64', 'linux/amd64'], path.join(fixturesDir, 'busybox'));
	return exobuild(['build', '--platform', 'linux/amd64', '--progress', 'plain', '--build-context', `busybox=oci-layout://${await baseLayout}`, ...args, buildContext()]);
};

test('a build into /dev/null keeps /dev/null; symlinked --metadata-file and --iidfile write their targets and stay links', async () => {
	const victim = makeVictim();
	const folder = fresh('cli-links');
	fs.mkdirSync(path.join(folder, 'real'));
	fs.writeFileSync(path.join(folder, 'real', 'metadata.json'), 'previous');
	fs.symlinkSync('real/metadata.json', path.join(folder, 'metadata.json'));
	fs.symlinkSync(path.join(folder, 'real', 'iid'), path.join(folder, 'iid'));
	const before = fs.lstatSync('/dev/null');
	const restore = guardDevNull();
	try {
		const result = await build(['-o', 'type=oci,dest=/dev/null', '--metadata-file', path.join(folder, 'metadata.json'), '--iidfile', path.join(folder, 'iid')]);
		assert.equal(result.exitCode, 0, failure(result));
		const now = fs.lstatSync('/dev/null');
		assert.ok(now.isCharacterDevice(), '/dev/null is no longer a character device');
		assert.equal(now.rdev, before.rdev);
		assert.equal(now.ino, before.ino, '/dev/null was replaced');
	} finally {
		restore();
	}

	assert.ok(fs.lstatSync(path.join(folder, 'metadata.json')).isSymbolicLink());
	assert.ok(fs.lstatSync(path.join(folder, 'iid')).isSymbolicLink());
	const metadata = JSON.parse(fs.readFileSync(path.join(folder, 'real', 'metadata.json'), 'utf8')) as Record<string, unknown>;
	assert.match(String(metadata['containerimage.digest']), /^sha256:[a-f0-9]{64}$/);
	assert.equal(fs.readFileSync(path.join(folder, 'real', 'iid'), 'utf8'), metadata['containerimage.config.digest']);
	assert.deepEqual(fs.readdirSync(folder).sort(), ['iid', 'metadata.json', 'real']);
	assert.deepEqual(fs.readdirSync(path.join(folder, 'real')).sort(), ['iid', 'metadata.json']);
	assert.deepEqual(fs.readdirSync(path.join(exobuildEnv.EXOBUILD_CACHE_DIR, 'runs')).filter(name => name.endsWith('.partials')), [], 'the run left its partials record folder');
	victim.assertUnchanged();
	victim.remove();
});

test('--iidfile /dev/stdout prints the image id', async () => {
	const victim = makeVictim();
	const folder = fresh('cli-stdout');
	const restore = guardDevStdout();
	let result: Awaited<ReturnType<typeof build>>;
	try {
		result = await build(['-o', `type=oci,dest=${path.join(folder, 'image.tar')}`, '--iidfile', '/dev/stdout', '--metadata-file', path.join(folder, 'metadata.json')]);
		assert.ok(fs.lstatSync('/dev/stdout').isSymbolicLink(), '/dev/stdout was replaced');
	} finally {
		restore();
	}

	assert.equal(result.exitCode, 0, failure(result));
	const metadata = JSON.parse(fs.readFileSync(path.join(folder, 'metadata.json'), 'utf8')) as Record<string, unknown>;
	const iid = String(metadata['containerimage.config.digest']);
	assert.match(iid, /^sha256:[a-f0-9]{64}$/);
	assert.equal(String(result.stdout), iid, 'stdout holds the image id (as buildx writes it: no newline) and nothing else');
	assert.ok(fs.statSync(path.join(folder, 'image.tar')).size > 0);
	victim.assertUnchanged();
	victim.remove();
});

test('a build whose output fills its filesystem exits 1 naming the folder, the previous archive intact, no partial left', {skip: asRoot ? false : 'mounting a tmpfs needs root'}, async () => {
	const victim = makeVictim();
	const full = await tmpfs('1m');
	try {
		const dest = path.join(full, 'image.tar');
		const previous = crypto.randomBytes(100 * 1024);
		fs.writeFileSync(dest, previous);
		const result = await build(['-o', `type=oci,dest=${dest}`]);
		assert.equal(result.exitCode, 1, result.all);
		assert.match(String(result.stderr), new RegExp(`exobuild: .*${full}`));
		assert.doesNotMatch(String(result.stderr), /internal error/);
		assert.ok(fs.readFileSync(dest).equals(previous), 'the previous archive changed');
		assert.deepEqual(fs.readdirSync(full), ['image.tar']);
	} finally {
		await unmount(full);
	}

	victim.assertUnchanged();
	victim.remove();
});
