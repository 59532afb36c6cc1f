/**
 * Hostile layers applied on the host (src/oci/layer-apply.ts) and `-o type=local` written as
 * buildx writes it (src/outputs/local.ts). Every case checks a victim folder outside the root
 * byte for byte.
 */
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, afterEach, test} from 'node:test';
import {parseOutput} from '../../src/cli/build-flags/options.js';
import {isUserError} from '../../src/errors.js';
import {applyLayer, LayoutWriter, unpackImageArchive} from '../../src/oci/index.js';
import {outputTargetSchema, writeLocalOutput, writeOutput} from '../../src/outputs/index.js';
import {craftTar, type CraftedEntry} from './tar-craft.js';
import {makeVictim, treeSnapshot, type Victim} from './victim.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-layers-'));
process.env['EXOBUILD_CACHE_DIR'] = path.join(work, 'cache');
/** A victim no test names: every test, whatever it attacks, must leave it as it was. */
const bystander = makeVictim();
afterEach(() => {
	bystander.assertUnchanged();
});
after(() => {
	bystander.remove();
	fs.rmSync(work, {recursive: true, force: true});
});
const asRoot = process.getuid?.() === 0;
const myUid = process.getuid?.() ?? 0;

let counter = 0;
const fresh = (name: string): string => path.join(work, `${name}-${counter++}`);

/** A fresh root folder with `layers` (crafted tars) applied in order; the victim is checked after. */
const applyAll = async (layers: ReadonlyArray<readonly CraftedEntry[]>, options: Parameters<typeof applyLayer>[2] = {}): Promise<string> => {
	const root = fresh('root');
	fs.mkdirSync(root);
	for (const [index, entries] of layers.entries()) {
		await applyLayer(craftTar(`${root}.layer${index}.tar`, entries), root, options);
	}

	return root;
};

const withVictim = async (check: (victim: Victim) => Promise<void>): Promise<void> => {
	const victim = makeVictim();
	try {
		await check(victim);
		victim.assertUnchanged();
	} finally {
		victim.remove();
	}
};

const refused = (error: unknown): boolean => isUserError(error) && error.code === 'E_LAYER_REFUSED' && error.exitCode === 1;

/** Enough `../` to climb from any folder of this machine to `/`. */
const climb = '../'.repeat(30);

test('the issue\'s attack: a symlink to a host folder, then a folder in its place with whiteouts', async () => withVictim(async victim => {
	const root = await applyAll([
		[{path: 'x', type: 'SymbolicLink', linkpath: victim.dir}],
		[{path: 'x/'}, {path: 'x/.wh.a'}, {path: 'x/.wh..wh..opq'}, {path: 'x/f', content: 'hi\n'}],
	]);
	assert.ok(fs.lstatSync(path.join(root, 'x')).isDirectory());
	assert.deepEqual(fs.readdirSync(path.join(root, 'x')), ['f']);
}));

test('the same attack through a relative symlink that climbs out of the root', async () => withVictim(async victim => {
	const root = await applyAll([
		[{path: 'x', type: 'SymbolicLink', linkpath: `${climb}${victim.dir.slice(1)}`}],
		[{path: 'x/'}, {path: 'x/.wh.a'}, {path: 'x/.wh..wh..opq'}, {path: 'x/f', content: 'hi\n'}],
	]);
	assert.deepEqual(fs.readdirSync(path.join(root, 'x')), ['f']);
}));

test('whiteouts under a symlinked parent (no folder entry) stay inside the root', async () => withVictim(async victim => {
	for (const target of [victim.dir, `${climb}${victim.dir.slice(1)}`, `/../../${climb}${victim.dir.slice(1)}/`]) {
		const root = await applyAll([
			[{path: 'x', type: 'SymbolicLink', linkpath: target}],
			[{path: 'x/.wh.a'}, {path: 'x/.wh.nested'}, {path: 'x/.wh..wh..opq'}],
		]);
		assert.equal(fs.readlinkSync(path.join(root, 'x')), target, 'the symlink itself is kept');
	}
}));

test('a file written through a symlinked parent lands inside the root, chroot-like', async () => withVictim(async victim => {
	const root = await applyAll([
		[{path: 'x', type: 'SymbolicLink', linkpath: victim.dir}],
		[{path: 'x/new', content: 'pwned'}, {path: 'x/a', content: 'pwned'}, {path: 'x/nested/deep.txt', content: 'pwned'}],
	]);
	assert.equal(fs.readFileSync(path.join(root, victim.dir, 'new'), 'utf8'), 'pwned', 'the absolute target restarted at the root');
	assert.equal(fs.readFileSync(path.join(root, victim.dir, 'a'), 'utf8'), 'pwned');
	const sameLayer = await applyAll([[
		{path: 'y', type: 'SymbolicLink', linkpath: `${climb}${victim.dir.slice(1)}`}, {path: 'y/new', content: 'pwned'},
	]]);
	assert.equal(fs.readFileSync(path.join(sameLayer, victim.dir, 'new'), 'utf8'), 'pwned', '.. stopped at the root');
}));

test('a file or folder where a symlink is replaces the symlink, never writes through it', async () => withVictim(async victim => {
	const root = await applyAll([
		[{path: 'f', type: 'SymbolicLink', linkpath: path.join(victim.dir, 'a')}, {path: 'd', type: 'SymbolicLink', linkpath: victim.dir}],
		[{path: 'f', content: 'pwned'}, {path: 'd/'}, {path: 'd/a', content: 'pwned'}],
	]);
	assert.ok(fs.lstatSync(path.join(root, 'f')).isFile());
	assert.equal(fs.readFileSync(path.join(root, 'f'), 'utf8'), 'pwned');
	assert.ok(fs.lstatSync(path.join(root, 'd')).isDirectory());
}));

test('a whiteout of a symlink removes the link, not its target', async () => withVictim(async victim => {
	const root = await applyAll([
		[{path: 'x', type: 'SymbolicLink', linkpath: victim.dir}, {path: 'y', type: 'SymbolicLink', linkpath: path.join(victim.dir, 'a')}],
		[{path: '.wh.x'}, {path: '.wh.y'}],
	]);
	assert.deepEqual(fs.readdirSync(root), []);
}));

test('hardlinks to host files are refused: a victim file, /etc/passwd, through a symlink, with ..', async () => withVictim(async victim => {
	const passwdLinks = fs.statSync('/etc/passwd').nlink;
	const attempts: Array<ReadonlyArray<readonly CraftedEntry[]>> = [
		[[{path: 'h', type: 'Link', linkpath: path.join(victim.dir, 'a')}]],
		[[{path: 'h', type: 'Link', linkpath: '/etc/passwd'}]],
		[[{path: 'h', type: 'Link', linkpath: 'etc/passwd'}]],
		[[{path: 'h', type: 'Link', linkpath: `${climb}etc/passwd`}]],
		[[{path: 'x', type: 'SymbolicLink', linkpath: victim.dir}], [{path: 'h', type: 'Link', linkpath: 'x/a'}]],
		[[{path: 'x', type: 'SymbolicLink', linkpath: '/etc'}], [{path: 'h', type: 'Link', linkpath: 'x/passwd'}]],
		[[{path: 'p', type: 'SymbolicLink', linkpath: '/etc/passwd'}], [{path: 'h', type: 'Link', linkpath: 'p'}, {path: 'h', content: 'pwned'}]],
	];
	for (const layers of attempts) {
		await applyAll(layers).then(root => {
			// A hardlink to a symlink is a copy of the symlink: writing its path replaces it.
			assert.equal(fs.readFileSync(path.join(root, 'h'), 'utf8'), 'pwned');
			assert.equal(fs.readlinkSync(path.join(root, 'p')), '/etc/passwd');
		}, (error: unknown) => {
			assert.ok(refused(error), String(error));
		});
	}

	assert.equal(fs.statSync(path.join(victim.dir, 'a')).nlink, 1);
	assert.equal(fs.statSync('/etc/passwd').nlink, passwdLinks);
	assert.equal(fs.readFileSync('/etc/passwd', 'utf8').includes('pwned'), false);
	// A hardlink inside the image still works, also through a symlinked folder.
	const root = await applyAll([[{path: 'usr/'}, {path: 'usr/bin/'}, {path: 'usr/bin/tool', content: 'tool'}, {path: 'bin', type: 'SymbolicLink', linkpath: 'usr/bin'}, {path: 'tool2', type: 'Link', linkpath: 'bin/tool'}]]);
	assert.equal(fs.statSync(path.join(root, 'tool2')).ino, fs.statSync(path.join(root, 'usr/bin/tool')).ino);
}));

test('entry names with .. are refused; absolute names land inside the root', async () => withVictim(async victim => {
	for (const name of [`${climb}${victim.dir.slice(1)}/a`, `x/../../${path.basename(victim.dir)}/a`, '../escape', `./../${climb}tmp/escape`]) {
		await assert.rejects(applyAll([[{path: name, content: 'pwned'}]]), refused, name);
	}

	for (const name of [`${climb}${victim.dir.slice(1)}/.wh.a`, `../.wh..wh..opq`]) {
		await assert.rejects(applyAll([[{path: name}]]), refused, name);
	}

	const root = await applyAll([[{path: path.join(victim.dir, 'a'), content: 'pwned'}, {path: `/${path.join(victim.dir, '.wh.f')}`}]]);
	assert.equal(fs.readFileSync(path.join(root, victim.dir, 'a'), 'utf8'), 'pwned');
	assert.equal(fs.existsSync(path.join(work, '..', 'escape')), false);
	assert.equal(fs.existsSync('/tmp/escape'), false);
}));

test('device nodes and FIFOs are skipped (and hide what a lower layer had there)', async () => withVictim(async () => {
	const root = await applyAll([
		[{path: 'dev/'}, {path: 'dev/old', content: 'lower'}],
		[
			{path: 'dev/null2', type: 'CharacterDevice', devmaj: 1, devmin: 3, mode: 0o666},
			{path: 'dev/sda', type: 'BlockDevice', devmaj: 8, devmin: 0},
			{path: 'dev/fifo', type: 'FIFO'},
			{path: 'dev/old', type: 'CharacterDevice', devmaj: 1, devmin: 1},
		],
	]);
	assert.deepEqual(fs.readdirSync(path.join(root, 'dev')), []);
}));

test('a setuid-root file lands without the bit, owned by the caller; keepOwners keeps both (root only)', async () => withVictim(async () => {
	const layer: CraftedEntry[] = [
		{path: 'bin/'}, {path: 'bin/su', content: '#!/bin/sh\nid\n', mode: 0o4755, uid: 1234, gid: 5678},
		{path: 'bin/wall', content: 'x', mode: 0o2755, uid: 0, gid: 5}, {path: 'shared/', mode: 0o3777, uid: 1234, gid: 1234},
	];
	const root = await applyAll([layer]);
	const su = fs.statSync(path.join(root, 'bin/su'));
	assert.equal(su.mode & 0o7777, 0o755);
	assert.equal(su.uid, myUid);
	assert.equal(fs.statSync(path.join(root, 'bin/wall')).mode & 0o7777, 0o755);
	assert.equal(fs.statSync(path.join(root, 'shared')).mode & 0o7777, 0o1777, 'the sticky bit stays, setgid goes');
	if (asRoot) {
		const kept = await applyAll([layer], {keepOwners: true, keepSetuid: true});
		const keptSu = fs.statSync(path.join(kept, 'bin/su'));
		assert.deepEqual([keptSu.mode & 0o7777, keptSu.uid, keptSu.gid], [0o4755, 1234, 5678]);
		const builderLike = await applyAll([layer], {keepOwners: true});
		const builderSu = fs.statSync(path.join(builderLike, 'bin/su'));
		assert.deepEqual([builderSu.mode & 0o7777, builderSu.uid], [0o755, 1234], 'the builder rootfs: owners kept, setuid cleared');
	}
}));

test('usrmerge-style symlinks are recreated exactly and later layers write through them inside the root', async () => {
	const root = await applyAll([
		[
			{path: 'usr/'}, {path: 'usr/lib/'}, {path: 'usr/lib/libc.so.6', content: 'libc'}, {path: 'usr/bin/'}, {path: 'usr/bin/dash', content: 'dash', mode: 0o755},
			{path: 'lib', type: 'SymbolicLink', linkpath: 'usr/lib'}, {path: 'bin/'}, {path: 'bin/sh', type: 'SymbolicLink', linkpath: '/usr/bin/dash'},
			{path: 'usr/lib/libc.so', type: 'SymbolicLink', linkpath: '/lib/libc.so.6'}, {path: 'far', type: 'SymbolicLink', linkpath: '../../../../etc/passwd'},
		],
		[{path: 'lib/x86_64-linux-gnu/'}, {path: 'lib/x86_64-linux-gnu/libm.so.6', content: 'libm'}, {path: 'lib/.wh.libc.so'}],
	]);
	assert.equal(fs.readlinkSync(path.join(root, 'lib')), 'usr/lib');
	assert.equal(fs.readlinkSync(path.join(root, 'bin/sh')), '/usr/bin/dash');
	assert.equal(fs.readlinkSync(path.join(root, 'far')), '../../../../etc/passwd', 'a symlink is data');
	assert.equal(fs.readFileSync(path.join(root, 'usr/lib/x86_64-linux-gnu/libm.so.6'), 'utf8'), 'libm');
	assert.equal(fs.existsSync(path.join(root, 'usr/lib/libc.so')), false, 'whited out through lib -> usr/lib');
	assert.equal(fs.readFileSync(path.join(root, 'usr/lib/libc.so.6'), 'utf8'), 'libc');
});

test('an opaque whiteout removes only lower layers\' content, whatever the entry order', async () => {
	const root = await applyAll([
		[{path: 'd/'}, {path: 'd/old', content: 'old'}, {path: 'd/sub/'}, {path: 'd/sub/oldsub', content: 'old'}, {path: 'd/gone/'}, {path: 'd/gone/x', content: 'old'}],
		[{path: 'd/new', content: 'new'}, {path: 'd/sub/'}, {path: 'd/sub/newsub', content: 'new'}, {path: 'd/.wh..wh..opq'}, {path: 'd/later', content: 'later'}],
	]);
	assert.deepEqual(fs.readdirSync(path.join(root, 'd')).sort(), ['later', 'new', 'sub']);
	assert.deepEqual(fs.readdirSync(path.join(root, 'd/sub')), ['newsub']);
	const whiteout = await applyAll([
		[{path: 'e/'}, {path: 'e/old', content: 'old'}],
		[{path: 'e/new', content: 'new'}, {path: '.wh.e'}],
	]);
	assert.deepEqual(fs.readdirSync(path.join(whiteout, 'e')), ['new'], '.wh.NAME hides only the lower layers\' NAME');
});

test('read-only folders of one layer do not stop the next layer from writing into them', async () => {
	const root = await applyAll([
		[{path: 'ro/', mode: 0o555}, {path: 'ro/f', content: 'lower', mode: 0o444}],
		[{path: 'ro/g', content: 'upper'}, {path: 'ro/f', content: 'replaced'}, {path: 'ro/.wh.g2'}],
	]);
	assert.deepEqual(fs.readdirSync(path.join(root, 'ro')).sort(), ['f', 'g']);
	assert.equal(fs.readFileSync(path.join(root, 'ro/f'), 'utf8'), 'replaced');
	assert.equal(fs.statSync(path.join(root, 'ro')).mode & 0o777, asRoot ? 0o555 : 0o755, 'exact as root; writable by its owner otherwise');
});

test('symlink loops and a file in a parent\'s place are refused', async () => {
	await assert.rejects(applyAll([[{path: 'a', type: 'SymbolicLink', linkpath: 'b'}, {path: 'b', type: 'SymbolicLink', linkpath: 'a'}, {path: 'a/f', content: 'x'}]]), refused);
	await assert.rejects(applyAll([[{path: 'a', content: 'file'}, {path: 'a/f', content: 'x'}]]), refused);
});

test('a truncated or corrupt layer fails the apply', async () => {
	const file = craftTar(fresh('cut.tar'), [{path: 'big', content: crypto.randomBytes(100_000)}]);
	fs.truncateSync(file, 50_000);
	const root = fresh('cut-root');
	fs.mkdirSync(root);
	await assert.rejects(applyLayer(file, root));
	const corrupt = craftTar(fresh('corrupt.tar'), [{path: 'a', content: 'a'}, {path: 'b', content: 'b'}]);
	const bytes = fs.readFileSync(corrupt);
	bytes[1024 + 100] = 0x39; // the second header's mode field: its checksum no longer matches
	fs.writeFileSync(corrupt, bytes);
	await assert.rejects(applyLayer(corrupt, root), /checksum|TAR_ENTRY_INVALID/);
});

test('an abort stops the apply within a fraction of a second', async () => {
	const entries: CraftedEntry[] = [];
	for (let index = 0; index < 5000; index++) {
		entries.push({path: `d${index % 100}/f${index}`, content: 'x'});
	}

	const file = craftTar(fresh('many.tar'), entries);
	const root = fresh('many-root');
	fs.mkdirSync(root);
	const controller = new AbortController();
	setTimeout(() => controller.abort(), 100);
	const started = Date.now();
	await assert.rejects(applyLayer(file, root, {signal: controller.signal}), (error: unknown) => (error as Error).name === 'AbortError');
	const elapsed = Date.now() - started;
	assert.ok(elapsed < 700, `stopped after ${elapsed} ms`);
	assert.ok(fs.readdirSync(root, {recursive: true}).length < entries.length, 'it stopped before the end');
});

test('the builder archive: outer symlinks, hardlinks, devices and escaping names are refused; setuid bits are cleared', async () => withVictim(async victim => {
	// A good archive, packed from a layout.
	const layoutDir = fresh('archive-layout');
	const writer = new LayoutWriter(layoutDir);
	const layer = craftTar(fresh('setuid.tar'), [{path: 'usr/'}, {path: 'usr/bin/'}, {path: 'usr/bin/su', content: 'su', mode: 0o4755, uid: 0}, {path: 'x', type: 'SymbolicLink', linkpath: victim.dir}]);
	const hostile = craftTar(fresh('hostile.tar'), [{path: 'x/'}, {path: 'x/.wh.a'}, {path: 'x/.wh..wh..opq'}]);
	await writer.finish(await writer.addImage({layers: [layer, hostile], architecture: 'amd64'}));
	const archive = fresh('archive.tar');
	execFileSync('tar', ['-cf', archive, '-C', layoutDir, '.']);
	const rootfs = fresh('rootfs');
	await unpackImageArchive(archive, rootfs);
	assert.equal(fs.statSync(path.join(rootfs, 'usr/bin/su')).mode & 0o7777, 0o755);
	assert.deepEqual(fs.readdirSync(path.join(rootfs, 'x')), []);

	const outer: Array<[string, CraftedEntry[]]> = [
		['symlink', [{path: 'index.json', type: 'SymbolicLink', linkpath: '/etc/passwd'}]],
		['hardlink', [{path: 'index.json', type: 'Link', linkpath: path.join(victim.dir, 'a')}]],
		['device', [{path: 'index.json', type: 'CharacterDevice', devmaj: 1, devmin: 5}]],
		['fifo', [{path: 'index.json', type: 'FIFO'}]],
		['dotdot', [{path: `../${path.basename(victim.dir)}/a`, content: 'pwned'}]],
		['absolute', [{path: path.join(victim.dir, 'a'), content: 'pwned'}]],
	];
	for (const [name, entries] of outer) {
		const bad = craftTar(fresh(`outer-${name}.tar`), entries);
		const dest = fresh(`outer-${name}-rootfs`);
		await assert.rejects(unpackImageArchive(bad, dest), (error: unknown) => isUserError(error) && error.code === 'E_ARCHIVE_REFUSED', name);
		assert.equal(fs.existsSync(dest), false);
	}

	assert.deepEqual(fs.readdirSync(work).filter(name => name.startsWith('.oci-archive-')), [], 'no staging folder left');
}));

/** A one-platform layout from crafted layers. */
const layoutOf = async (layers: ReadonlyArray<readonly CraftedEntry[]>): Promise<string> => {
	const dir = fresh('layout');
	const writer = new LayoutWriter(dir);
	const files = layers.map((entries, index) => craftTar(`${dir}.layer${index}.tar`, entries));
	await writer.finish(await writer.addImage({layers: files, architecture: 'amd64'}));
	return dir;
};

const partialsIn = (dir: string): string[] => fs.readdirSync(dir).filter(name => name.endsWith('.partial'));

test('type=local into an existing folder keeps what the image does not have and replaces what it has', async () => {
	const layout = await layoutOf([[{path: 'etc/'}, {path: 'etc/os-release', content: 'image'}, {path: 'greeting', content: 'from the image'}]]);
	const dest = fresh('existing');
	fs.mkdirSync(path.join(dest, 'etc'), {recursive: true});
	fs.mkdirSync(path.join(dest, 'src'));
	fs.writeFileSync(path.join(dest, 'Dockerfile'), 'FROM busybox\n');
	fs.writeFileSync(path.join(dest, 'src/main.c'), 'int main;\n');
	fs.writeFileSync(path.join(dest, 'etc/local.conf'), 'mine');
	fs.writeFileSync(path.join(dest, 'greeting'), 'old');
	await writeLocalOutput(layout, dest);
	assert.equal(fs.readFileSync(path.join(dest, 'Dockerfile'), 'utf8'), 'FROM busybox\n');
	assert.equal(fs.readFileSync(path.join(dest, 'src/main.c'), 'utf8'), 'int main;\n');
	assert.equal(fs.readFileSync(path.join(dest, 'etc/local.conf'), 'utf8'), 'mine');
	assert.equal(fs.readFileSync(path.join(dest, 'etc/os-release'), 'utf8'), 'image');
	assert.equal(fs.readFileSync(path.join(dest, 'greeting'), 'utf8'), 'from the image');
	assert.deepEqual(partialsIn(path.dirname(dest)), []);
});

test('type=local where DIR holds symlinks: a real folder and file take their place, their targets untouched', async () => withVictim(async victim => {
	const layout = await layoutOf([[{path: 'x/'}, {path: 'x/f', content: 'hi'}, {path: 'a', content: 'pwned'}, {path: 'deep/'}, {path: 'deep/nested/'}, {path: 'deep/nested/deep.txt', content: 'pwned'}]]);
	const dest = fresh('symlinked');
	fs.mkdirSync(dest);
	fs.symlinkSync(victim.dir, path.join(dest, 'x'));
	fs.symlinkSync(path.join(victim.dir, 'a'), path.join(dest, 'a'));
	fs.symlinkSync(victim.dir, path.join(dest, 'deep'));
	await writeLocalOutput(layout, dest);
	assert.ok(fs.lstatSync(path.join(dest, 'x')).isDirectory());
	assert.equal(fs.readFileSync(path.join(dest, 'x/f'), 'utf8'), 'hi');
	assert.ok(fs.lstatSync(path.join(dest, 'a')).isFile());
	assert.ok(fs.lstatSync(path.join(dest, 'deep')).isDirectory());
}));

test('type=local: the issue\'s attack layers and a setuid file, through the output', async () => withVictim(async victim => {
	const layout = await layoutOf([
		[{path: 'bin/'}, {path: 'bin/su', content: 'su', mode: 0o4755, uid: 4321}, {path: 'x', type: 'SymbolicLink', linkpath: victim.dir}],
		[{path: 'x/'}, {path: 'x/.wh.a'}, {path: 'x/.wh..wh..opq'}, {path: 'x/f', content: 'hi\n'}],
	]);
	const dest = fresh('attack-out');
	await writeOutput(layout, {type: 'local', dest});
	assert.deepEqual(fs.readdirSync(path.join(dest, 'x')), ['f']);
	const su = fs.statSync(path.join(dest, 'bin/su'));
	assert.deepEqual([su.mode & 0o7777, su.uid], [0o755, myUid]);
	assert.equal(fs.statSync(dest).mode & 0o777, 0o755);
	if (asRoot) {
		const kept = fresh('kept-out');
		await writeOutput(layout, {type: 'local', dest: kept, keepOwners: true});
		const keptSu = fs.statSync(path.join(kept, 'bin/su'));
		assert.deepEqual([keptSu.mode & 0o7777, keptSu.uid], [0o4755, 4321]);
	}
}));

test('type=local to a dangling symlink is refused (exit 2) and the symlink left alone', async () => {
	const layout = await layoutOf([[{path: 'f', content: 'x'}]]);
	const dest = fresh('dangling');
	fs.symlinkSync(fresh('nothing'), dest);
	await assert.rejects(writeLocalOutput(layout, dest), (error: unknown) => isUserError(error) && error.exitCode === 2);
	assert.ok(fs.lstatSync(dest).isSymbolicLink());
	assert.deepEqual(partialsIn(work), []);
});

test('keep-owners=true is parsed from -o, and refused for a normal user (exit 2)', async () => {
	const original = process.getuid;
	process.getuid = () => 1000;
	try {
		const parsed = outputTargetSchema.safeParse({type: 'local', dest: '/tmp/x', keepOwners: true});
		assert.equal(parsed.success, false);
		assert.match(parsed.error!.issues[0]!.message, /keep-owners=true needs root/);
		await assert.rejects(writeLocalOutput(fresh('nowhere'), fresh('not-written'), {keepOwners: true}), (error: unknown) => isUserError(error) && error.exitCode === 2);
		assert.equal(outputTargetSchema.safeParse({type: 'local', dest: '/tmp/x', keepOwners: false}).success, true);
		assert.throws(() => parseOutput([`type=local,dest=${fresh('cli')},keep-owners=true`], work), (error: unknown) => isUserError(error) && error.exitCode === 2 && /needs root/.test(error.message));
		assert.throws(() => parseOutput([`type=local,dest=${fresh('cli')},keep-owners=yes`], work), (error: unknown) => isUserError(error) && error.exitCode === 2);
	} finally {
		process.getuid = original;
	}

	if (asRoot) {
		assert.deepEqual(parseOutput([`type=local,dest=${path.join(work, 'cli-root')},keep-owners=true`], work).target, {type: 'local', dest: path.join(work, 'cli-root'), keepOwners: true});
	}
});

test('type=local onto a full filesystem fails with exit 1 and leaves the previous tree byte for byte', {skip: asRoot ? false : 'mounting a tmpfs needs root'}, async () => {
	const mountPoint = fresh('tmpfs');
	fs.mkdirSync(mountPoint);
	execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountPoint]);
	try {
		const dest = path.join(mountPoint, 'out');
		const small = await layoutOf([[{path: 'bin/'}, {path: 'bin/tool', content: 'v1 '.repeat(1000), mode: 0o755}, {path: 'report.txt', content: 'the last good report\n'}]]);
		await writeLocalOutput(small, dest);
		fs.writeFileSync(path.join(dest, 'mine.txt'), 'not from the image\n');
		const before = treeSnapshot(dest);
		const big = await layoutOf([[
			{path: 'report.txt', content: 'a new report\n'}, {path: 'bin/'}, {path: 'bin/tool', content: crypto.randomBytes(3 * 1024 * 1024), mode: 0o755},
		]]);
		await assert.rejects(writeLocalOutput(big, dest), (error: unknown) => isUserError(error) && error.code === 'E_NO_SPACE' && error.exitCode === 1 && error.message.includes(dest));
		assert.deepEqual(treeSnapshot(dest), before);
		assert.deepEqual(partialsIn(mountPoint), [], 'no partial folder left');

		// DIR itself the mount point: the staging folder goes inside it, still on its filesystem.
		const innerMount = fresh('tmpfs-dest');
		fs.mkdirSync(innerMount);
		execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', innerMount]);
		try {
			await writeLocalOutput(small, innerMount);
			const innerBefore = treeSnapshot(innerMount);
			await assert.rejects(writeLocalOutput(big, innerMount), (error: unknown) => isUserError(error) && error.code === 'E_NO_SPACE');
			assert.deepEqual(treeSnapshot(innerMount), innerBefore);
		} finally {
			execFileSync('umount', [innerMount]);
		}
	} finally {
		execFileSync('umount', [mountPoint]);
	}
});
