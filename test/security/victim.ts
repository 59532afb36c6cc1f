/**
 * The victim: a host folder outside every sandbox, output and cache, filled with files, a
 * nested folder, a symlink and an executable. A security test makes one, runs its attack, and
 * asserts the folder is unchanged byte for byte (types, modes, owners, contents, targets), and
 * that the host's binfmt_misc table is as it was when the victim was made.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Victim {
	readonly dir: string;
	/** Asserts that the folder is exactly as made. */
	assertUnchanged(): void;
	remove(): void;
}

/** The host's binfmt_misc: whether it is mounted at /proc/sys/fs/binfmt_misc, and every entry's content. */
export const hostBinfmtSnapshot = (): string => {
	const dir = '/proc/sys/fs/binfmt_misc';
	const mounted = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(line => line.split(' ')[4] === dir).length;
	const entries = (fs.existsSync(dir) ? fs.readdirSync(dir) : []).sort().map(name => {
		try {
			return `${name}: ${fs.readFileSync(path.join(dir, name), 'utf8')}`;
		} catch (error) {
			return `${name}: <${(error as NodeJS.ErrnoException).code}>`;
		}
	});
	return JSON.stringify({mounted, entries});
};

/** Every entry under `dir` (no symlink followed): type, mode, owner, size, content hash, target. */
export const treeSnapshot = (dir: string): string[] => {
	const lines: string[] = [];
	const walk = (folder: string, prefix: string): void => {
		for (const name of fs.readdirSync(folder).sort()) {
			const full = path.join(folder, name);
			const stat = fs.lstatSync(full);
			const id = `${prefix}${name} mode=${stat.mode.toString(8)} uid=${stat.uid} gid=${stat.gid}`;
			if (stat.isSymbolicLink()) {
				lines.push(`${id} -> ${fs.readlinkSync(full)}`);
			} else if (stat.isDirectory()) {
				lines.push(`${id}/`);
				walk(full, `${prefix}${name}/`);
			} else if (stat.isFile()) {
				lines.push(`${id} size=${stat.size} sha256=${crypto.createHash('sha256').update(fs.readFileSync(full)).digest('hex')}`);
			} else {
				lines.push(`${id} rdev=${stat.rdev}`);
			}
		}
	};

	walk(dir, '');
	return lines;
};

/** Makes a victim folder (under `parent`, default the system temp folder). */
export const makeVictim = (parent = os.tmpdir()): Victim => {
	const dir = fs.mkdtempSync(path.join(parent, 'exobuild-victim-'));
	fs.writeFileSync(path.join(dir, 'a'), 'precious a\n');
	fs.writeFileSync(path.join(dir, 'f'), 'precious f\n');
	fs.mkdirSync(path.join(dir, 'nested'));
	fs.writeFileSync(path.join(dir, 'nested', 'deep.txt'), 'precious deep\n');
	fs.symlinkSync('nested/deep.txt', path.join(dir, 'link'));
	fs.writeFileSync(path.join(dir, 'tool'), '#!/bin/sh\n', {mode: 0o755});
	const before = treeSnapshot(dir);
	const binfmtBefore = hostBinfmtSnapshot();
	const dirStat = fs.lstatSync(dir);
	return {
		dir,
		assertUnchanged() {
			const now = fs.lstatSync(dir);
			assert.ok(now.isDirectory(), `${dir} is no longer a folder`);
			assert.equal(now.mode, dirStat.mode, `${dir}'s mode changed`);
			assert.deepEqual(treeSnapshot(dir), before, `${dir} changed`);
			assert.equal(hostBinfmtSnapshot(), binfmtBefore, 'the host\'s binfmt_misc table changed');
		},
		remove() {
			fs.rmSync(dir, {recursive: true, force: true});
		},
	};
};
