/**
 * A tampered cache (issue 8, findings 7, 9, 11, 12, 13): exobuild's cache is exobuild's and
 * nobody else's. Records that point outside it, a copied cache, symlinked folders, corrupt
 * records, an empty lock owner, a replaced builder archive. Each case checks a victim folder
 * outside the cache byte for byte. Fast: no sandbox is started; the CLI is run where the case
 * is about a command (`prune`, `builder rm`, `builder save`).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, afterEach, beforeEach, test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {execa} from 'execa';
import * as tar from 'tar';
import {builderArchitecture, importBuilderArchive} from '../../src/builder-image/index.js';
import {buildCacheDir, projectCacheDir, pruneProjectCaches, withProjectCache} from '../../src/pipeline/build-cache.js';
import {isUserError} from '../../src/errors.js';
import {LayoutWriter} from '../../src/oci/index.js';
import {withLock} from '../../src/runs/lock.js';
import {builderRootfs} from '../../src/sandboxes/linux-userns/builder-rootfs.js';
import {makeVictim, type Victim} from './victim.js';

const bin = fileURLToPath(new URL('../../../bin/exobuild', import.meta.url));
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-sec-cache-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));

let cache: string;
let victim: Victim;
let caseNumber = 0;
beforeEach(() => {
	cache = path.join(root, `cache-${++caseNumber}`);
	process.env['EXOBUILD_CACHE_DIR'] = cache;
	victim = makeVictim();
});
afterEach(() => {
	victim.assertUnchanged();
	victim.remove();
});

const run = async (args: readonly string[], cacheDir = cache) => execa(bin, args, {reject: false, all: true, env: {EXOBUILD_CACHE_DIR: cacheDir}});

const withTimeout = async <T>(promise: Promise<T>, ms: number, what: string): Promise<T> => {
	let timer: NodeJS.Timeout | undefined;
	const timeout = new Promise<never>((_resolve, reject) => {
		timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms);
	});
	try {
		return await Promise.race([promise, timeout]);
	} finally {
		clearTimeout(timer);
	}
};

const sha256 = (file: string): string => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const hashOf = (text: string): string => crypto.createHash('sha256').update(text).digest('hex');

/** A small but real builder archive whose agent prints `says`. */
const builderArchive = async (name: string, inputHash: string, says: string): Promise<string> => {
	const tree = path.join(root, `${name}-tree`);
	fs.mkdirSync(path.join(tree, 'usr/local/bin'), {recursive: true});
	fs.writeFileSync(path.join(tree, 'usr/local/bin/exobuild-agent'), `#!/bin/sh\necho ${says}\n`, {mode: 0o755});
	const layer = path.join(root, `${name}-layer.tar`);
	await tar.c({cwd: tree, file: layer, portable: true}, ['usr']);
	const layout = path.join(root, `${name}-layout`);
	const writer = new LayoutWriter(layout);
	await writer.finish(await writer.addImage({
		layers: [layer], architecture: builderArchitecture(), labels: {'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': inputHash},
	}), 'builder');
	const archive = path.join(root, `${name}.tar`);
	await tar.c({cwd: layout, file: archive, portable: true}, ['oci-layout', 'index.json', 'blobs']);
	return archive;
};

/** A builder record as exobuild before issue 8 wrote it: with an absolute archivePath. */
const plantLegacyRecord = (inputHash: string, archivePath: string): string => {
	const dir = path.join(cache, 'builder-images');
	fs.mkdirSync(dir, {recursive: true, mode: 0o700});
	const record = path.join(dir, `${inputHash}.json`);
	fs.writeFileSync(record, JSON.stringify({
		archivePath, manifestDigest: `sha256:${hashOf('manifest')}`, inputHash, architecture: builderArchitecture(), kind: 'distro',
	}));
	return record;
};

test('the cache and every folder exobuild makes in it are mode 0700; a wider cache root is narrowed; one of another user is refused', async () => {
	const loaded = await run(['builder', 'load', '-i', await builderArchive('modes', hashOf('modes'), 'modes')]);
	assert.equal(loaded.exitCode, 0, loaded.all);
	await withProjectCache(path.join(root, 'ctx-modes'), path.join(root, 'ctx-modes', 'Dockerfile'), () => undefined, async data => data);
	const result = await run(['prune']);
	assert.equal(result.exitCode, 0, result.all);
	const modes: string[] = [];
	const walk = (dir: string): void => {
		const stat = fs.lstatSync(dir);
		if (stat.isDirectory()) {
			modes.push(`${path.relative(cache, dir) || '.'} ${(stat.mode & 0o777).toString(8)}`);
			for (const name of fs.readdirSync(dir)) {
				walk(path.join(dir, name));
			}
		}
	};

	walk(cache);
	assert.ok(modes.length > 1, `prune made folders: ${modes.join(', ')}`);
	assert.deepEqual(modes.filter(line => !line.endsWith(' 700')), [], 'every folder is 0700');

	const wide = path.join(root, 'wide-cache');
	fs.mkdirSync(wide, {mode: 0o755});
	fs.chmodSync(wide, 0o755);
	assert.equal((await run(['prune'], wide)).exitCode, 0);
	assert.equal(fs.statSync(wide).mode & 0o777, 0o700, 'a wider cache root is narrowed');

	// A shared folder (one with other files in it, or /tmp's sticky bit) is refused, never narrowed.
	const shared = path.join(root, 'shared-folder');
	fs.mkdirSync(shared, {mode: 0o755});
	fs.chmodSync(shared, 0o755);
	fs.writeFileSync(path.join(shared, 'notes.txt'), 'someone else\'s\n');
	const sharedResult = await run(['prune'], shared);
	assert.equal(sharedResult.exitCode, 2, sharedResult.all);
	assert.match(sharedResult.stderr, /open to other users .*notes\.txt/);
	assert.equal(fs.statSync(shared).mode & 0o777, 0o755, 'its mode is left alone');
	assert.deepEqual(fs.readdirSync(shared), ['notes.txt']);

	if (process.getuid?.() !== 0) {
		return; // Only root can give a folder to another user.
	}

	const foreign = path.join(root, 'foreign-cache');
	fs.mkdirSync(foreign, {mode: 0o700});
	fs.chownSync(foreign, 4321, 4321);
	const refused = await run(['prune'], foreign);
	assert.equal(refused.exitCode, 2, refused.all);
	assert.match(refused.stderr, /belongs to uid 4321/);
	assert.match(refused.stderr, /hint: .*EXOBUILD_CACHE_DIR/);
	assert.deepEqual(fs.readdirSync(foreign), [], 'nothing was written into it');
});

test('a builder record naming a file outside the store: `builder rm`, `rm --stale`, `prune --builders` and `save` leave it alone', async () => {
	const target = path.join(victim.dir, 'a');
	const hash = hashOf('outside');
	const record = plantLegacyRecord(hash, target);
	const out = path.join(root, 'saved-outside.tar');
	const save = await run(['builder', 'save', '-o', out, hash.slice(0, 12)]);
	assert.notEqual(save.exitCode, 0, 'nothing to save: the record names no archive in the store');
	assert.equal(fs.existsSync(out), false, 'the victim file was not copied out');
	for (const args of [['builder', 'rm', hash.slice(0, 12)], ['builder', 'rm', '--stale'], ['prune', '--builders']]) {
		// Each command sees the record afresh.
		if (!fs.existsSync(record)) {
			plantLegacyRecord(hash, target);
		}

		const result = await run(args);
		assert.notEqual(result.exitCode, 70, result.all);
		assert.ok(fs.existsSync(target), `${args.join(' ')} deleted the file the record named`);
	}

	assert.match(fs.readdirSync(path.join(cache, 'builder-images')).join(' '), new RegExp(`${hash}\\.json\\.corrupt-`), 'the bad record is set aside');

	// A record as older exobuilds wrote it, whose absolute path ends in the right name: read by that name, in this store.
	const legacy = hashOf('legacy');
	await importBuilderArchive(await builderArchive('legacy', legacy, 'legacy'));
	plantLegacyRecord(legacy, path.join(victim.dir, `${legacy}.tar`));
	const listed = await run(['builder', 'ls', '--json']);
	assert.equal(listed.exitCode, 0, listed.all);
	assert.deepEqual((JSON.parse(listed.stdout) as Array<{archivePath: string}>).map(image => image.archivePath), [path.join(cache, 'builder-images', `${legacy}.tar`)]);
});

test('`builder rm` in a copy of the cache leaves the original\'s archive alone', async () => {
	const hash = hashOf('copied');
	await importBuilderArchive(await builderArchive('copied', hash, 'original'));
	const original = path.join(cache, 'builder-images', `${hash}.tar`);
	const before = sha256(original);
	const copy = path.join(root, 'copied-cache');
	await execa('cp', ['-a', cache, copy]);
	const result = await run(['builder', 'rm', hash.slice(0, 12)], copy);
	assert.equal(result.exitCode, 0, result.all);
	assert.equal(fs.existsSync(path.join(copy, 'builder-images', `${hash}.tar`)), false, 'the copy\'s archive is removed');
	assert.equal(sha256(original), before, 'the original\'s archive is untouched');
	const saved = path.join(root, 'saved-original.tar');
	assert.equal((await run(['builder', 'save', '-o', saved, hash.slice(0, 12)])).exitCode, 0);
	assert.equal(sha256(saved), before);
});

test('a symlinked project cache folder: `prune --max-cache-size 0` does not prune through it, and a build does not write into it', async () => {
	const context = path.join(root, 'ctx-symlinked');
	const dockerfile = path.join(context, 'Dockerfile');
	const project = projectCacheDir(context, dockerfile);
	fs.mkdirSync(path.dirname(project), {recursive: true, mode: 0o700});
	fs.symlinkSync(victim.dir, project);
	const result = await run(['prune', '--max-cache-size', '0']);
	assert.equal(result.exitCode, 0, result.all);
	victim.assertUnchanged();

	fs.rmSync(project, {force: true});
	fs.symlinkSync(victim.dir, project);
	const data = await withTimeout(withProjectCache(context, dockerfile, () => undefined, async dir => {
		fs.writeFileSync(path.join(dir, 'engine-cache'), 'written by the build\n');
		return dir;
	}), 20_000, 'withProjectCache');
	assert.ok(fs.lstatSync(project).isDirectory(), 'the project cache is a real folder again');
	assert.equal(fs.realpathSync(data), path.join(fs.realpathSync(cache), 'build-cache', path.basename(project), 'data'));
});

test('corrupt records (project.json, builder record, lock owner) are set aside with a warning; prune exits 0', async () => {
	const projects = buildCacheDir();
	const keep = path.join(projects, '0123456789abcdef');
	fs.mkdirSync(path.join(keep, 'data'), {recursive: true, mode: 0o700});
	fs.writeFileSync(path.join(keep, 'project.json'), '{"context": "/x", "lastUsed": ');
	const builderRecord = path.join(cache, 'builder-images', `${hashOf('corrupt')}.json`);
	fs.mkdirSync(path.dirname(builderRecord), {recursive: true, mode: 0o700});
	fs.writeFileSync(builderRecord, 'not json at all');

	const result = await run(['prune', '--builders']);
	assert.equal(result.exitCode, 0, result.all);
	assert.match(result.stderr, /warning: .*project\.json/);
	assert.match(result.stderr, /warning: .*\.json/);
	assert.ok(fs.readdirSync(keep).some(name => name.startsWith('project.json.corrupt-')), 'project.json is set aside');
	assert.ok(fs.readdirSync(path.dirname(builderRecord)).some(name => name.startsWith(`${path.basename(builderRecord)}.corrupt-`)), 'the builder record is set aside');

	// A lock whose owner record is garbage, older than the grace period: broken, the cache pruned.
	const locked = path.join(projects, 'fedcba9876543210');
	fs.mkdirSync(path.join(locked, 'data'), {recursive: true, mode: 0o700});
	fs.writeFileSync(path.join(locked, 'data', 'blob'), 'x'.repeat(1000));
	for (const lock of [`${locked}.lock`, path.join(locked, '.lock')]) {
		fs.mkdirSync(lock);
		fs.writeFileSync(path.join(lock, 'owner.json'), '{"pid": garbage');
		const old = new Date(Date.now() - 60_000);
		fs.utimesSync(lock, old, old);
	}

	const pruned = await run(['prune', '--max-cache-size', '0']);
	assert.equal(pruned.exitCode, 0, pruned.all);
	assert.equal(fs.existsSync(locked), false, `the cache behind a dead lock is pruned:\n${pruned.all}`);
});

test('an empty lock owner older than the grace period is broken and the build proceeds', async () => {
	const context = path.join(root, 'ctx-empty-lock');
	const dockerfile = path.join(context, 'Dockerfile');
	const project = projectCacheDir(context, dockerfile);
	for (const lock of [`${project}.lock`, path.join(project, '.lock')]) {
		fs.mkdirSync(lock, {recursive: true});
		fs.writeFileSync(path.join(lock, 'owner.json'), '');
		const old = new Date(Date.now() - 60_000);
		fs.utimesSync(lock, old, old);
	}

	const used = await withTimeout(withProjectCache(context, dockerfile, () => undefined, async data => data), 20_000, 'a build behind an empty lock owner');
	assert.ok(fs.statSync(used).isDirectory());
});

test('prune removes a project cache while holding its lock: a build waiting for that lock then starts with a fresh cache', async () => {
	const context = path.join(root, 'ctx-prune-race');
	const dockerfile = path.join(context, 'Dockerfile');
	let open: () => void = () => undefined;
	const gate = new Promise<void>(resolve => {
		open = resolve;
	});
	const first = withProjectCache(context, dockerfile, () => undefined, async data => {
		fs.writeFileSync(path.join(data, 'layer'), 'x'.repeat(4096));
		await gate;
	});
	await new Promise(resolve => setTimeout(resolve, 200));
	let waited = false;
	const second = withProjectCache(context, dockerfile, () => {
		waited = true;
	}, async data => {
		fs.writeFileSync(path.join(data, 'layer'), 'written by the waiting build\n');
		return data;
	});
	await new Promise(resolve => setTimeout(resolve, 200));
	assert.ok(waited, 'the second build waits for the first');
	open();
	await first;
	// Prune comes in between the first build's release and the waiting build's next look.
	const removed = await pruneProjectCaches(0);
	assert.deepEqual(removed.map(cache => path.basename(cache.dir)), [path.basename(projectCacheDir(context, dockerfile))], 'prune removed the cache');
	const data = await withTimeout(second, 20_000, 'the waiting build');
	assert.equal(fs.readFileSync(path.join(data, 'layer'), 'utf8'), 'written by the waiting build\n');
});

test('withLock: work that throws EEXIST rethrows at once (it is not mistaken for a held lock)', async () => {
	const lock = path.join(root, `lock-eexist-${caseNumber}`);
	let runs = 0;
	await withTimeout(assert.rejects(withLock(lock, () => undefined, async () => {
		runs++;
		throw Object.assign(new Error('file exists'), {code: 'EEXIST'});
	}), /file exists/), 10_000, 'withLock');
	assert.equal(runs, 1);
	assert.equal(fs.existsSync(lock), false, 'the lock is released');
});

test('a builder archive replaced after `load` is refused when used; restoring it is enough to recover', async () => {
	const hash = hashOf('replaced');
	const good = await builderArchive('good', hash, 'the real agent');
	const evil = await builderArchive('evil', hash, 'the poisoned agent');
	const image = await importBuilderArchive(good);
	const stored = path.join(cache, 'builder-images', `${hash}.tar`);
	const agentOf = (rootfs: string): string => fs.readFileSync(path.join(rootfs, 'usr/local/bin/exobuild-agent'), 'utf8');

	// Replaced before the first unpack: refused, nothing unpacked from it.
	fs.copyFileSync(evil, stored);
	await assert.rejects(builderRootfs(image), (error: unknown) => {
		assert.ok(isUserError(error), String(error));
		assert.equal(error.exitCode, 1);
		assert.match(error.message, /does not match its record/);
		assert.ok(error.hint);
		return true;
	});
	fs.copyFileSync(good, stored);
	const rootfs = await builderRootfs(image);
	assert.match(agentOf(rootfs), /the real agent/);

	// Replaced after an unpack: refused again; restored: the rootfs is the real one.
	fs.rmSync(stored);
	fs.copyFileSync(evil, stored);
	await assert.rejects(builderRootfs(image), /does not match its record/);
	fs.rmSync(stored);
	fs.copyFileSync(good, stored);
	assert.match(agentOf(await builderRootfs(image)), /the real agent/);

	// A rootfs without its completion marker is unpacked again.
	fs.writeFileSync(path.join(rootfs, 'usr/local/bin/exobuild-agent'), 'half-written');
	for (const name of fs.readdirSync(path.dirname(rootfs)).filter(entry => entry.endsWith('.complete'))) {
		fs.rmSync(path.join(path.dirname(rootfs), name));
	}

	assert.match(agentOf(await builderRootfs(image)), /the real agent/);
});
