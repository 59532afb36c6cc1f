/**
 * Finding 8 (root required): a build run by a normal user. The sandbox's root is that user (ids
 * 1..65536 its subordinate ids), never the host's root, so what a hostile Dockerfile makes lands
 * on the host owned by the user, with no setuid bit, and a folder the user cannot reach stays
 * out of reach.
 *
 * Run as a normal user, the test builds as itself. Run as root, it builds as the user
 * `exobuild-ci` (made with `useradd -m` if missing; .ci's test/run.sh makes the same one), and
 * adds finding 1's whiteout attack against a victim folder of root's: run as root, that
 * Dockerfile empties the folder; run as the user, it must not.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {execa} from 'execa';
import {bin, failure, fixturesDir, hostBinfmtSnapshot, makeContext, repoRoot, testCacheDir} from '../e2e/helpers.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {makeVictim, type Victim} from './victim.js';

const asRoot = process.getuid?.() === 0;
const ciUser = 'exobuild-ci';

interface Builder {
	readonly name: string;
	readonly uid: number;
	readonly gid: number;
	readonly home: string;
}

const passwdEntry = async (name: string): Promise<Builder | undefined> => {
	const {stdout, exitCode} = await execa('getent', ['passwd', name], {reject: false});
	const fields = String(stdout).trim().split(':');
	return exitCode === 0 && fields.length >= 6 ? {name, uid: Number(fields[2]), gid: Number(fields[3]), home: fields[5]!} : undefined;
};

/** Runs argv as the builder (runuser when root). */
const asBuilder = (builder: Builder, argv: readonly string[], env: Record<string, string> = {}) => asRoot
	? execa('runuser', ['-u', builder.name, '--', 'env', ...Object.entries(env).map(([key, value]) => `${key}=${value}`), ...argv], {reject: false, all: true})
	: execa(argv[0]!, argv.slice(1), {reject: false, all: true, env});

/** Every entry under `dir` (no symlink followed), with its lstat. */
const walk = (dir: string): Array<[string, fs.Stats]> => fs.readdirSync(dir).flatMap(name => {
	const full = path.join(dir, name);
	const stat = fs.lstatSync(full);
	return [[full, stat] as [string, fs.Stats], ...(stat.isDirectory() ? walk(full) : [])];
});

let builder: Builder;
let skip: string | undefined;
let work: string;
let cache: string;
let layout: string;
let victim: Victim;
let binfmtBefore: string;

before(async () => {
	if (process.platform !== 'linux') {
		skip = 'linux-userns only';
		return;
	}

	if (asRoot) {
		if (await passwdEntry(ciUser) === undefined) {
			await execa('useradd', ['-m', ciUser]);
		}

		builder = (await passwdEntry(ciUser))!;
		// The user needs the checkout (bin, dist, vm-image): a checkout under /root is out of its reach.
		const reach = await asBuilder(builder, ['sh', '-c', `test -x '${bin}' && test -r '${path.join(repoRoot, 'dist', 'exobuild.mjs')}' && test -r '${path.join(repoRoot, 'vm-image', 'exobuild-agent')}'`]);
		if (reach.exitCode !== 0) {
			skip = `${ciUser} cannot read the checkout at ${repoRoot} (test/run.sh runs this file as that user from a copy)`;
			return;
		}
	} else {
		const info = os.userInfo();
		builder = {name: info.username, uid: info.uid, gid: info.gid, home: info.homedir};
	}

	layout = await busyboxLayout(['linux/ppc64le'], path.join(fixturesDir, 'busybox'));
	work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-rootless-'));
	// As root: the user's own cache (kept between runs, so the builder image is made or loaded once).
	cache = asRoot ? path.join(builder.home, '.cache', 'exobuild-security') : path.join(testCacheDir, 'exobuild');
	victim = makeVictim();
	if (asRoot) {
		fs.chmodSync(work, 0o755);
		fs.chownSync(work, builder.uid, builder.gid);
		await asBuilder(builder, ['mkdir', '-p', cache]);
		// Reuse root's builder image when the user has none yet (`builder load` verifies it).
		const rootImages = path.join(testCacheDir, 'exobuild', 'builder-images');
		const archive = fs.existsSync(rootImages) ? fs.readdirSync(rootImages).find(name => /^[a-f\d]{64}\.tar$/.test(name)) : undefined;
		const userHas = await asBuilder(builder, [bin, 'builder', 'inspect'], {EXOBUILD_CACHE_DIR: cache, CI: '1'});
		if (archive !== undefined && userHas.exitCode !== 0) {
			const copy = path.join(work, 'builder.tar');
			fs.copyFileSync(path.join(rootImages, archive), copy);
			fs.chownSync(copy, builder.uid, builder.gid);
			await asBuilder(builder, [bin, 'builder', 'load', '--input', copy], {EXOBUILD_CACHE_DIR: cache, CI: '1'});
			fs.rmSync(copy);
		}
	}

	binfmtBefore = hostBinfmtSnapshot();
});

after(() => {
	victim?.remove();
	if (work !== undefined) {
		fs.rmSync(work, {recursive: true, force: true});
	}
});

/** Builds `dockerfile` as the builder, `-o type=local` into a new folder; returns the result and the folder. */
const buildAsUser = async (name: string, dockerfile: readonly string[]) => {
	const context = makeContext(path.join(work, name), {Dockerfile: [...dockerfile, ''].join('\n')});
	if (asRoot) {
		for (const [file] of walk(context)) {
			fs.chownSync(file, builder.uid, builder.gid);
		}

		fs.chownSync(context, builder.uid, builder.gid);
	}

	const dest = path.join(work, `${name}-out`);
	const result = await asBuilder(builder, [bin, 'build', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '--output', `type=local,dest=${dest}`, context], env());
	return {result, dest};
};

const env = (): Record<string, string> => ({EXOBUILD_CACHE_DIR: cache, CI: '1'});

test('a normal user\'s build: RUN is uid 0 in the sandbox, the exported files are the user\'s with no setuid bit, a victim stays unchanged, and the cache can be emptied', async t => {
	if (skip !== undefined) {
		t.skip(skip);
		return;
	}

	const {result, dest} = await buildAsUser('owners', [
		'FROM busybox',
		'RUN id -u > /uid && cp /bin/busybox /suid-root && chown 0:0 /suid-root && chmod 4755 /suid-root'
		+ ' && mkdir /other && touch /other/sgid && chown 1234:1234 /other/sgid && chmod 6755 /other/sgid'
		// A folder only its (subordinate) owner can list: engine storage keeps one in the cache.
		+ ' && mkdir /private && touch /private/x && chown -R 77:77 /private && chmod 0700 /private',
	]);
	assert.equal(result.exitCode, 0, failure(result));
	assert.equal(fs.readFileSync(path.join(dest, 'uid'), 'utf8').trim(), '0', 'RUN ran as root of the sandbox');
	const entries = walk(dest);
	assert.ok(entries.some(([file]) => file.endsWith('suid-root')) && entries.some(([file]) => file.endsWith('sgid')));
	for (const [file, stat] of entries) {
		assert.deepEqual([stat.uid, stat.gid], [builder.uid, builder.gid], `${file} is owned by ${builder.name}`);
		assert.equal(stat.mode & 0o6000, 0, `${file} has no setuid/setgid bit (mode ${stat.mode.toString(8)})`);
	}

	victim.assertUnchanged();
	assert.equal(hostBinfmtSnapshot(), binfmtBefore, 'the host binfmt_misc is unchanged');

	// What the sandbox left in the cache (engine storage owned by subordinate ids) goes with prune,
	// and the runs folder is empty: nothing stays that the user cannot remove.
	const prune = await asBuilder(builder, [bin, 'prune', '--max-cache-size', '0'], env());
	assert.equal(prune.exitCode, 0, failure(prune));
	const foreign = walk(cache).filter(([, stat]) => stat.uid !== builder.uid || stat.gid !== builder.gid).map(([file, stat]) => `${file} ${stat.uid}:${stat.gid}`);
	assert.deepEqual(foreign, [], 'every file left in the cache is the user\'s own');
	const runs = path.join(cache, 'runs');
	assert.deepEqual(fs.existsSync(runs) ? fs.readdirSync(runs) : [], []);
});

test('run as root, a normal user\'s build cannot reach root\'s folder through finding 1\'s whiteout attack', async t => {
	if (skip !== undefined || !asRoot) {
		t.skip(skip ?? 'needs root: a normal user\'s own folders are protected by the host-side layer work, not by the id map');
		return;
	}

	const {result} = await buildAsUser('whiteouts', [
		'FROM busybox',
		`RUN ln -s ${victim.dir} /x`,
		'RUN rm /x && mkdir /x && touch /x/.wh.a /x/.wh..wh..opq && echo hi > /x/f',
	]);
	// As root this Dockerfile emptied the folder and exited 0; as the user it cannot even look into it.
	assert.notEqual(result.exitCode, undefined, result.all);
	victim.assertUnchanged();
	assert.equal(hostBinfmtSnapshot(), binfmtBefore, 'the host binfmt_misc is unchanged');
});
