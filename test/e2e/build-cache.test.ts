/**
 * The build cache outlives the sandbox: a rebuild with no change is all cache hits, though every
 * build gets a fresh sandbox; concurrent builds of one project wait for each other instead of
 * sharing (and corrupting) the cache; --cache-to/--cache-from name folders; prune bounds it.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {removeTree} from '../../src/fs/remove-tree.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, exobuild, failure, fixturesDir, makeContext} from './helpers.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-cache-'));
// --cache-to holds buildah's storage, owned by the sandbox's ids: as a normal user removeTree removes it in a user namespace.
after(async () => removeTree(work));
let layout: string;
before(async () => {
	layout = await busyboxLayout(['linux/ppc64le', 'linux/s390x'], path.join(fixturesDir, 'busybox'));
});

/**
 * BuildKit's state is kept per cache, not per project (src/pipeline/engine-state.ts): a nonce in
 * the first RUN makes this run's steps new to a cache that earlier runs of this file filled.
 */
const nonce = crypto.randomBytes(6).toString('hex');
const dockerfile = `FROM busybox AS work\nARG TARGETARCH\nRUN uname -m > /m && echo "$TARGETARCH" > /arch && echo ${nonce} > /nonce\nCOPY input.txt /input.txt\nRUN cat /m /arch /input.txt > /all\nFROM busybox\nCOPY --from=work /all /all\n`;

/**
 * Runs a plain-progress build; returns the steps it reported as [name, cached]. Both engines'
 * step lines are `#N [name]` and `#N CACHED`: exobuild's own for buildah, BuildKit's own (after
 * the progress time prefix `#  1.2s `) for BuildKit.
 */
const buildWith = async (context: string, extra: string[] = []): Promise<{steps: Array<[string, boolean]>; stderr: string}> => {
	const result = await exobuild(['build', '--progress', 'plain', '--platform', 'linux/ppc64le,linux/s390x', '--build-context', `busybox=oci-layout://${layout}`, ...extra, context]);
	assert.equal(result.exitCode, 0, failure(result));
	const stderr = String(result.stderr);
	const names = new Map<string, string>();
	const cached = new Set<string>();
	for (const raw of stderr.split('\n')) {
		const line = raw.replace(/^#\s+\d+(?:\.\d+)?s /, '');
		const start = /^#(\d+) (\[.*)$/.exec(line);
		if (start) {
			names.set(start[1]!, start[2]!);
		}

		const hit = /^#(\d+) CACHED$/.exec(line);
		if (hit) {
			cached.add(hit[1]!);
		}
	}

	return {steps: [...names].map(([id, name]) => [name, cached.has(id)]), stderr};
};

/** The Dockerfile's own steps (BuildKit also reports loading the context and the bases, which are never cached). */
const cacheable = (steps: Array<[string, boolean]>): Array<[string, boolean]> => steps.filter(([name]) => name.startsWith('[linux/') && !/\] FROM /.test(name));

for (const engine of ['buildkit', 'buildah'] as const) {
test(`${engine}: a rebuild with no change reports every step cached; a change re-runs from that step on; --no-cache runs all`, async () => {
	const context = makeContext(path.join(work, `project-${engine}`), {Dockerfile: dockerfile, 'input.txt': 'one\n'});
	const build = async (dir: string, extra: string[] = []) => buildWith(dir, ['--engine', engine, ...extra]);
	const first = await build(context);
	assert.ok(cacheable(first.steps).length >= 6, `steps per platform were reported:\n${first.stderr}`);
	assert.ok(cacheable(first.steps).every(([, cached]) => !cached), 'a first build has nothing cached');

	const second = await build(context);
	assert.deepEqual(cacheable(second.steps).map(([name]) => name).sort(), cacheable(first.steps).map(([name]) => name).sort());
	assert.ok(cacheable(second.steps).every(([, cached]) => cached), `every step cached:\n${second.steps.join('\n')}`);

	fs.writeFileSync(path.join(context, 'input.txt'), 'two\n');
	const changed = await build(context);
	for (const platform of ['linux/ppc64le', 'linux/s390x']) {
		const step = (instruction: RegExp): [string, boolean] | undefined => cacheable(changed.steps).find(([name]) => name.startsWith(`[${platform} `) && instruction.test(name));
		assert.equal(step(/RUN uname -m/)?.[1], true, `before the change: cached (${platform})`);
		assert.equal(step(/RUN cat \/m \/arch/)?.[1], false, `after the change: run again (${platform})`);
	}

	const fresh = await build(context, ['--no-cache']);
	assert.ok(cacheable(fresh.steps).every(([, cached]) => !cached));
	await assertNothingLeft();
});
}

const build = buildWith;

// BuildKit keeps its state in slots instead (one per concurrent build: test/e2e/warm-state.test.ts); buildah uses the project cache.
test('buildah: two builds of one project at once: the second waits for the first, both succeed, the cache stays whole', async () => {
	const context = makeContext(path.join(work, 'concurrent'), {Dockerfile: dockerfile, 'input.txt': 'c\n'});
	const [a, b] = await Promise.all([build(context, ['--engine', 'buildah']), build(context, ['--engine', 'buildah'])]);
	assert.ok([a, b].some(result => result.stderr.includes('waiting for another build of this project')), 'one of them waited');
	const after = await build(context, ['--engine', 'buildah']);
	assert.ok(cacheable(after.steps).every(([, cached]) => cached));
	await assertNothingLeft();
});

test('--cache-to then --cache-from a folder carry the cache to another project; prune --max-cache-size 0 empties the project caches', async () => {
	const folder = path.join(work, 'shared-cache');
	const one = makeContext(path.join(work, 'one'), {Dockerfile: dockerfile, 'input.txt': 'same\n'});
	const two = makeContext(path.join(work, 'two'), {Dockerfile: dockerfile, 'input.txt': 'same\n'});
	await build(one, ['--cache-to', `type=local,dest=${folder}`]);
	// BuildKit's kept state would serve the steps by itself: emptied, only the folder can.
	const emptied = await exobuild(['prune', '--max-cache-size', '0']);
	assert.equal(emptied.exitCode, 0, failure(emptied));
	const carried = await build(two, ['--cache-from', `type=local,src=${folder}`, '--cache-to', `type=local,dest=${folder}`]);
	assert.ok(cacheable(carried.steps).every(([, cached]) => cached), carried.steps.join('\n'));

	const refused = await exobuild(['build', '--cache-to', 'type=registry,ref=example/cache', one]);
	assert.equal(refused.exitCode, 2);
	assert.match(String(refused.stderr), /--cache-to type=registry is not supported/);

	const pruned = await exobuild(['prune', '--max-cache-size', '0']);
	assert.equal(pruned.exitCode, 0, failure(pruned));
	assert.match(String(pruned.stdout), /^cache /m);
	const again = await build(one);
	assert.ok(cacheable(again.steps).every(([, cached]) => !cached), 'the project cache was removed');
});
