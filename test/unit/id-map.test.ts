/** The sandbox's id map as a normal user: /etc/subuid parsing, newuidmap's arguments, the error naming the fix. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {isUserError} from '../../src/errors.js';
import {removeTree} from '../../src/fs/remove-tree.js';
import {identityMapLines, mapArguments, parseSubordinateRanges, sandboxIdMap, subordinateRanges, totalIds} from '../../src/sandboxes/linux-userns/id-map.js';
import {runInPrivateUserns} from '../../src/sandboxes/linux-userns/namespaces.js';

test('ranges are the user\'s by name or by id, in file order; malformed lines are skipped', () => {
	const text = ['alice:100000:65536', 'bob:165536:65536', '# comment', 'alice:bad:1', '1001:300000:10', '', 'alice:400000:5'].join('\n');
	assert.deepEqual(parseSubordinateRanges(text, {name: 'alice', id: 1001}), [{start: 100000, count: 65536}, {start: 300000, count: 10}, {start: 400000, count: 5}]);
	assert.deepEqual(parseSubordinateRanges(text, {name: 'carol', id: 1002}), []);
	assert.equal(totalIds(parseSubordinateRanges(text, {name: 'alice', id: 1001})), 65551);
});

test('newuidmap maps 0 to the user and the ranges from 1 on, one after the other', () => {
	assert.deepEqual(mapArguments(42, 1001, [{start: 100000, count: 65536}, {start: 300000, count: 10}]), ['42', '0', '1001', '1', '1', '100000', '65536', '65537', '300000', '10']);
});

test('fewer than 65536 ids: a UserError (exit 2) naming the file and the usermod fix', async () => {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-subuid-'));
	try {
		const file = path.join(dir, 'subuid');
		fs.writeFileSync(file, 'alice:100000:1000\n');
		await assert.rejects(subordinateRanges(file, {name: 'alice', uid: 1001, gid: 1001}), (error: unknown) => isUserError(error)
			&& error.exitCode === 2 && error.code === 'E_SUBORDINATE_IDS'
			&& error.message.includes(file) && error.message.includes('only 1000')
			&& (error.hint ?? '').includes('usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice'));
		await assert.rejects(subordinateRanges(path.join(dir, 'missing'), {name: 'alice', uid: 1001, gid: 1001}), /no subordinate ids/);
		fs.writeFileSync(file, 'alice:100000:65536\n');
		assert.deepEqual(await subordinateRanges(file, {name: 'alice', uid: 1001, gid: 1001}), [{start: 100000, count: 65536}]);
	} finally {
		fs.rmSync(dir, {recursive: true, force: true});
	}
});

test('as a normal user, removeTree removes what subordinate ids own (rm -rf in a user namespace)', async t => {
	if (process.platform !== 'linux' || process.getuid?.() === 0) {
		t.skip('a normal user\'s case (root removes anything)');
		return;
	}

	try {
		await sandboxIdMap();
	} catch (error) {
		t.skip(`no sandbox id map here: ${(error as Error).message}`);
		return;
	}

	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-owned-'));
	const made = await runInPrivateUserns(['/bin/sh', '-c', `mkdir '${dir}/engine' && touch '${dir}/engine/layer' && chown -R 1000:1000 '${dir}/engine' && chmod 0700 '${dir}/engine'`]);
	assert.equal(made.exitCode, 0, made.stderr);
	assert.notEqual(fs.statSync(path.join(dir, 'engine')).uid, process.getuid?.(), 'a subordinate id owns it');
	assert.throws(() => fs.rmSync(dir, {recursive: true, force: true}), /EACCES|EPERM/);
	await removeTree(dir);
	assert.equal(fs.existsSync(dir), false);
});

test('root\'s identity map follows the extents of its own map (one line each), up to the size', () => {
	assert.equal(identityMapLines('         0          0 4294967295\n', 65536), '0 0 65536\n');
	assert.equal(identityMapLines('         0       1001          1\n         1     100000      65535\n', 65536), '0 0 1\n1 1 65535\n');
	assert.equal(identityMapLines('1 100000 70000\n0 1001 1\n', 65536), '0 0 1\n1 1 65535\n');
});
