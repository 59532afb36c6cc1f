/**
 * BuildKit's kept state slots (src/pipeline/engine-state.ts) on a real cache folder: sealing,
 * a damaged or unsealed slot set aside with one warning, concurrent holders on separate slots,
 * one retry from an empty state when buildkitd does not start on a kept one; and the plan's --root.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {sandboxLayout} from '../../src/agent/agent-args.js';
import {engines} from '../../src/engines/index.js';
import {UserError} from '../../src/errors.js';
import {engineStateDir, listStateSlots, sealMismatch, withEngineState, type HeldStateSlot} from '../../src/pipeline/engine-state.js';
import {pruneProjectCaches} from '../../src/pipeline/build-cache.js';
import {request} from './engines-fixtures.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-engine-state-'));
process.env['EXOBUILD_CACHE_DIR'] = path.join(root, 'cache');

/** A slot kept in a host folder (no volumes given): its root is a folder of the cache. */
type FolderSlot = HeldStateSlot & {readonly root: string};

const hold = async <T>(use: (slot: FolderSlot) => Promise<T>): Promise<{result: T; warnings: string[]}> => {
	const warnings: string[] = [];
	const result = await withEngineState({onWait: () => undefined, onWarning: message => warnings.push(message)}, async slot => {
		assert.ok('root' in slot, 'without volumes the root is a host folder');
		return use(slot);
	});
	return {result, warnings};
};

/** What a buildkitd would leave: databases, a content blob, a snapshot folder. */
const fillState = (dir: string): void => {
	fs.mkdirSync(path.join(dir, 'runc-overlayfs', 'content', 'blobs', 'sha256'), {recursive: true});
	fs.mkdirSync(path.join(dir, 'runc-overlayfs', 'snapshots', 'snapshots', '1', 'fs'), {recursive: true});
	fs.writeFileSync(path.join(dir, 'runc-overlayfs', 'snapshots', 'snapshots', '1', 'fs', 'hi'), 'not sealed: inside a snapshot');
	fs.writeFileSync(path.join(dir, 'cache.db'), Buffer.alloc(4096));
	fs.writeFileSync(path.join(dir, 'runc-overlayfs', 'content', 'blobs', 'sha256', 'aa'), Buffer.alloc(1000));
};

test('a slot is sealed after use and reused as it was; a truncated or deleted file sets it aside with one warning', async () => {
	const first = await hold(async slot => {
		fillState(slot.root);
		return slot;
	});
	assert.equal(first.result.index, 0);
	assert.equal(first.result.fresh, true);
	assert.deepEqual(first.warnings, []);
	assert.equal(fs.statSync(first.result.root).mode & 0o777, 0o700);
	assert.equal(fs.statSync(engineStateDir()).mode & 0o777, 0o700);

	const second = await hold(async slot => slot);
	assert.equal(second.result.fresh, false);
	assert.deepEqual(second.warnings, []);

	// A file inside a snapshot's tree is not part of the seal (an image's files).
	fs.rmSync(path.join(second.result.root, 'runc-overlayfs', 'snapshots', 'snapshots', '1', 'fs', 'hi'));
	assert.equal((await hold(async slot => slot)).result.fresh, false);

	fs.truncateSync(path.join(second.result.root, 'cache.db'), 10);
	const truncated = await hold(async slot => {
		const left = fs.readdirSync(slot.root);
		fillState(slot.root);
		return {slot, left};
	});
	assert.equal(truncated.result.slot.fresh, true);
	assert.deepEqual(truncated.result.left, [], 'the damaged state is gone');
	assert.equal(truncated.warnings.length, 1);
	assert.match(truncated.warnings[0]!, /cache\.db is 10 bytes, sealed at 4096/);

	fs.rmSync(path.join(truncated.result.slot.root, 'runc-overlayfs', 'content', 'blobs', 'sha256', 'aa'));
	const deleted = await hold(async slot => slot);
	assert.equal(deleted.warnings.length, 1);
	assert.match(deleted.warnings[0]!, /blobs\/sha256\/aa is missing/);
	assert.deepEqual(fs.readdirSync(engineStateDir()).filter(name => name.startsWith('.')), [], 'nothing set aside is left');
});

test('a build that failed in the engine leaves its slot sealed; one that died otherwise leaves it unsealed, which the next sets aside', async () => {
	await hold(async slot => fillState(slot.root));
	await assert.rejects(hold(async () => {
		throw new UserError('RUN false', {code: 'E_BUILD_FAILED'});
	}));
	assert.deepEqual((await hold(async () => undefined)).warnings, []);

	await assert.rejects(hold(async slot => {
		fillState(slot.root);
		throw new Error('killed');
	}));
	const next = await hold(async slot => slot.fresh);
	assert.equal(next.result, true);
	assert.match(next.warnings[0]!, /left unsealed/);
});

test('concurrent holders take separate slots and neither waits for the other', async () => {
	let release!: () => void;
	const gate = new Promise<void>(resolve => {
		release = resolve;
	});
	let held = 0;
	const both = Promise.all([0, 1].map(async () => hold(async slot => {
		held++;
		if (held === 2) {
			release();
		}

		await gate;
		return slot.index;
	})));
	const indexes = (await both).map(({result}) => result).sort();
	assert.deepEqual(indexes, [0, 1]);
});

test('buildkitd not starting on a kept state: one warning, the build is run again from an empty state', async () => {
	await hold(async slot => fillState(slot.root));
	const seen: boolean[] = [];
	const {result, warnings} = await hold(async slot => {
		seen.push(slot.fresh);
		if (!slot.fresh) {
			throw new UserError('buildkitd did not answer', {code: 'E_ENGINE_START'});
		}

		return 'built';
	});
	assert.equal(result, 'built');
	assert.deepEqual(seen, [false, true]);
	assert.equal(warnings.length, 1);
	assert.match(warnings[0]!, /did not start on its kept state/);

	// On an empty state the failure is the engine's own: not retried.
	await prune();
	const calls: boolean[] = [];
	await assert.rejects(hold(async slot => {
		calls.push(slot.fresh);
		throw new UserError('buildkitd did not answer', {code: 'E_ENGINE_START'});
	}), (error: unknown) => (error as UserError).code === 'E_ENGINE_START');
	assert.deepEqual(calls, [true]);
});

const prune = async (): Promise<void> => {
	await pruneProjectCaches(0);
};

test('prune --max-cache-size bounds the slots: 0 removes them all, a slot held by a live build is kept', async () => {
	await hold(async slot => fillState(slot.root));
	const listed = await listStateSlots();
	assert.equal(listed.length, 1);
	assert.ok(listed[0]!.bytes >= 5096, `the slot's files are counted (${listed[0]!.bytes})`);
	let removedWhileHeld: string[] = [];
	await hold(async () => {
		removedWhileHeld = (await pruneProjectCaches(0)).map(cache => path.basename(cache.dir));
	});
	assert.ok(!removedWhileHeld.includes('buildkit-0'), 'the held slot stays');
	await prune();
	assert.deepEqual(await listStateSlots(), []);
});

test('sealMismatch: names the first file missing, resized or of another type', () => {
	assert.equal(sealMismatch([['a', 1], ['d', -1]], [['a', 1], ['d', -1], ['new', 5]]), undefined);
	assert.equal(sealMismatch([['a', 1]], []), 'a is missing');
	assert.equal(sealMismatch([['a', 1]], [['a', 0]]), 'a is 0 bytes, sealed at 1');
	assert.equal(sealMismatch([['d', -1]], [['d', -2]]), 'd changed type');
	assert.equal(sealMismatch([['buildkitd.lock', 0]], []), undefined);
});

test('BuildKit\'s --root is the kept state where the host keeps one, else the scratch state', () => {
	const built = request();
	const rootOf = (engineState?: string): string | undefined => {
		const daemon = engines.buildkit.plan(built, sandboxLayout(built, [], engineState === undefined ? {} : {engineState: {hostPath: engineState}})).steps[0]!;
		return daemon.argv[daemon.argv.indexOf('--root') + 1];
	};

	assert.equal(rootOf('/host/slot/root'), '/exobuild/engine-state');
	assert.equal(rootOf(), '/exobuild/state/buildkit');
});
