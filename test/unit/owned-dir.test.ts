import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {execa} from 'execa';
import {createOwnedDir, ownerFile, processStartTime, reapOwnedDirs} from '../../src/runs/owned-dir.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-owned-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));

const deadPid = async (): Promise<number> => {
	const child = await execa('sh', ['-c', 'echo $$']);
	return Number(child.stdout);
};

test('a folder of a live owner stays; one of a dead or replaced owner is reaped', async () => {
	const mine = await createOwnedDir(path.join(root, 'mine'), 'test');
	const dead = path.join(root, 'dead');
	fs.mkdirSync(dead);
	fs.writeFileSync(path.join(dead, ownerFile), JSON.stringify({pid: await deadPid(), startTime: '1', kind: 'test', created: new Date().toISOString()}));
	const reused = path.join(root, 'reused');
	fs.mkdirSync(reused);
	// Our own pid, but another start time: the pid was reused by an unrelated process.
	fs.writeFileSync(path.join(reused, ownerFile), JSON.stringify({pid: process.pid, startTime: '12345', kind: 'test', created: new Date().toISOString()}));
	const fresh = path.join(root, 'no-record-yet');
	fs.mkdirSync(fresh);

	const removed = await reapOwnedDirs(root);
	assert.deepEqual(removed.sort(), ['dead', 'reused']);
	assert.ok(fs.existsSync(mine.path));
	assert.ok(fs.existsSync(fresh), 'a folder without a record is given a grace period');
	assert.deepEqual(await reapOwnedDirs(root, () => true, 0), ['no-record-yet']);
	await mine.remove();
	assert.equal(fs.existsSync(mine.path), false);
});

test('the start time of this process is read from /proc', async () => {
	const start = await processStartTime(process.pid);
	assert.match(start ?? '', /^\d+$/);
	assert.equal(await processStartTime(await deadPid()), undefined);
});
