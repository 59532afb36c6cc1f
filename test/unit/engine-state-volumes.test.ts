/**
 * BuildKit's kept state in Apple `container volume`s (src/sandboxes/apple-container/state-volumes.ts
 * through src/pipeline/engine-state.ts), against the simulator of Apple's CLI
 * (test/simulators/apple-container: volume commands need no root): the first use of a slot makes
 * its volume with exobuild's labels, the next reuses it, an unsealed one is removed and made again
 * with one warning, so is one buildkitd does not start on, concurrent holders get separate
 * volumes, prune removes them, and a volume of that name exobuild did not make is refused.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {execa} from 'execa';
import {UserError} from '../../src/errors.js';
import {pruneProjectCaches} from '../../src/pipeline/build-cache.js';
import {listStateSlots, withEngineState, type HeldStateSlot} from '../../src/pipeline/engine-state.js';
import {cacheKeyOf, createStateVolumes, stateVolumeName} from '../../src/sandboxes/apple-container/state-volumes.js';
import {parseVolumeList} from '../../src/sandboxes/apple-container/shapes.js';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const simulator = path.join(repoRoot, 'test', 'simulators', 'apple-container', 'container');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-state-volumes-'));
process.env['EXOBUILD_CACHE_DIR'] = path.join(root, 'cache');
process.env['EXOBUILD_CONTAINER_CLI'] = simulator;
process.env['CONTAINER_SIM_ROOT'] = path.join(root, 'sim');
after(() => fs.rmSync(root, {recursive: true, force: true}));

const volumes = createStateVolumes(async () => [1, 2, 2], 'c0ffee');
const container = async (...args: string[]) => execa(simulator, args, {reject: false});
const listed = async (): Promise<Array<{name: string; labels: Readonly<Record<string, string>>}>> => {
	const result = await container('volume', 'list', '--format', 'json');
	assert.equal(result.exitCode, 0, result.stderr);
	return parseVolumeList(JSON.parse(result.stdout), [1, 2, 2]).map(({name, labels}) => ({name, labels}));
};

/** A file in the simulated volume's data (the ext4 image's contents), as buildkitd would leave one. */
const dataFile = (volume: string): string => path.join(root, 'sim', 'volume-data', volume, 'buildkitd-was-here');
const volumeOf = (slot: HeldStateSlot): string => {
	assert.ok('volume' in slot, 'with volumes the root is a volume');
	return slot.volume;
};

const hold = async <T>(use: (slot: HeldStateSlot) => Promise<T>): Promise<{result: T; warnings: string[]}> => {
	const warnings: string[] = [];
	const result = await withEngineState({onWait: () => undefined, onWarning: message => warnings.push(message), volumes}, use);
	return {result, warnings};
};

test('slot volumes: made labelled on first use, reused sealed, remade with one warning when left unsealed, separate per concurrent build, pruned', async () => {
	assert.equal((await container('system', 'start')).exitCode, 0);
	const first = await hold(async slot => {
		fs.writeFileSync(dataFile(volumeOf(slot)), 'state');
		return slot;
	});
	assert.deepEqual([first.result.index, first.result.fresh, volumeOf(first.result)], [0, true, 'exobuild-state-c0ffee-buildkit-0']);
	assert.deepEqual(first.warnings, []);
	assert.deepEqual(await listed(), [{name: 'exobuild-state-c0ffee-buildkit-0', labels: {'dev.exobuild.state': 'buildkit', 'dev.exobuild.state-slot': '0'}}]);
	assert.ok(!(await listStateSlots()).some(slot => fs.existsSync(path.join(slot.dir, 'root'))), 'no host folder stands for the root');

	// Sealed: the next build gets the same volume with what was in it, no warning.
	const second = await hold(async slot => [slot.fresh, volumeOf(slot), fs.readFileSync(dataFile(volumeOf(slot)), 'utf8')]);
	assert.deepEqual(second.result, [false, 'exobuild-state-c0ffee-buildkit-0', 'state']);
	assert.deepEqual(second.warnings, []);

	// A build that did not finish (killed: no seal) leaves a volume that is removed and made again, with one warning.
	await assert.rejects(hold(async () => {
		throw new Error('killed');
	}), /killed/);
	const third = await hold(async slot => [slot.fresh, fs.existsSync(dataFile(volumeOf(slot)))]);
	assert.deepEqual(third.result, [true, false], 'an empty volume');
	assert.equal(third.warnings.length, 1);
	assert.match(third.warnings[0]!, /^BuildKit's kept state \(volume exobuild-state-c0ffee-buildkit-0\) cannot be trusted \(it was left unsealed by a build that did not finish\)/);

	// buildkitd not starting on a sealed volume: removed, made again, the build run once more.
	fs.writeFileSync(dataFile('exobuild-state-c0ffee-buildkit-0'), 'damaged');
	const seen: Array<[boolean, boolean]> = [];
	const retried = await hold(async slot => {
		seen.push([slot.fresh, fs.existsSync(dataFile(volumeOf(slot)))]);
		if (!slot.fresh) {
			throw new UserError('buildkitd did not answer', {code: 'E_ENGINE_START'});
		}

		return 'built';
	});
	assert.equal(retried.result, 'built');
	assert.deepEqual(seen, [[false, true], [true, false]]);
	assert.equal(retried.warnings.length, 1);
	assert.match(retried.warnings[0]!, /did not start on its kept state \(volume exobuild-state-c0ffee-buildkit-0\)/);

	// Two builds at once: two slots, two volumes.
	let release!: () => void;
	const gate = new Promise<void>(resolve => {
		release = resolve;
	});
	let held = 0;
	const both = await Promise.all([0, 1].map(async () => hold(async slot => {
		held++;
		if (held === 2) {
			release();
		}

		await gate;
		return volumeOf(slot);
	})));
	assert.deepEqual(both.map(({result}) => result).sort(), ['exobuild-state-c0ffee-buildkit-0', 'exobuild-state-c0ffee-buildkit-1']);
	assert.deepEqual((await listed()).map(volume => volume.name).sort(), ['exobuild-state-c0ffee-buildkit-0', 'exobuild-state-c0ffee-buildkit-1']);

	// prune --max-cache-size 0 removes the slots with their volumes; a user's own volume stays.
	assert.equal((await container('volume', 'create', 'users-own')).exitCode, 0);
	const removed = await pruneProjectCaches(0, volumes);
	assert.deepEqual(removed.map(cache => path.basename(cache.dir)).sort(), ['buildkit-0', 'buildkit-1']);
	assert.deepEqual((await listed()).map(volume => volume.name), ['users-own']);
	assert.equal(fs.existsSync(path.join(root, 'sim', 'volume-data', 'exobuild-state-c0ffee-buildkit-0')), false, 'its data is gone');
});

test('a volume named like a slot\'s that exobuild did not make is refused, never used nor removed', async () => {
	assert.equal((await container('volume', 'create', 'exobuild-state-c0ffee-buildkit-0')).exitCode, 0);
	await assert.rejects(hold(async () => 'unreached'), (error: unknown) => error instanceof UserError && error.code === 'E_CONTAINER_CLI'
		&& /a volume named exobuild-state-c0ffee-buildkit-0 exists that exobuild did not make/.test(error.message));
	await pruneProjectCaches(0, volumes);
	assert.deepEqual((await listed()).map(volume => volume.name).sort(), ['exobuild-state-c0ffee-buildkit-0', 'users-own']);
});

test('a slot volume whose slot folder is gone (its cache was removed) is listed as never used and pruned', async () => {
	assert.deepEqual(await volumes.ensure(5), {name: 'exobuild-state-c0ffee-buildkit-5', created: true});
	assert.deepEqual(await volumes.ensure(5), {name: 'exobuild-state-c0ffee-buildkit-5', created: false});
	const slots = await listStateSlots(volumes);
	assert.deepEqual(slots.map(slot => [path.basename(slot.dir), slot.lastUsed, fs.existsSync(slot.dir)]), [['buildkit-5', undefined, false]]);
	const removed = await pruneProjectCaches(0, volumes);
	assert.deepEqual(removed.map(cache => path.basename(cache.dir)), ['buildkit-5']);
	assert.equal((await listed()).some(volume => volume.name === 'exobuild-state-c0ffee-buildkit-5'), false);
});

test('another cache folder\'s state volumes are its own: not listed, used nor pruned here (volumes are machine-wide, slot locks are per cache folder)', async () => {
	const other = createStateVolumes(async () => [1, 2, 2], cacheKeyOf(path.join(root, 'another-cache')));
	const theirs = await other.ensure(0);
	assert.match(theirs.name, /^exobuild-state-[\da-f]{12}-buildkit-0$/);
	assert.notEqual(theirs.name, stateVolumeName(0, 'c0ffee'));
	assert.equal((await volumes.list()).some(volume => volume.name === theirs.name), false, 'not one of this cache\'s slots');
	await pruneProjectCaches(0, volumes);
	assert.equal((await listed()).some(volume => volume.name === theirs.name), true, 'prune of this cache keeps it');
	await other.remove(0);
	assert.equal((await listed()).some(volume => volume.name === theirs.name), false);
});
