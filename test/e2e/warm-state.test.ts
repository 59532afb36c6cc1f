/**
 * BuildKit's state outlives the throwaway sandbox (src/pipeline/engine-state.ts): a second build
 * imports nothing it imported before; a damaged state is set aside with one warning and the
 * build succeeds; two builds at once take separate state slots and run side by side; a slot is
 * exobuild's cache (0700, never followed through a symlink). Real builds of a Debian base under
 * ppc64le emulation.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {removeTree} from '../../src/fs/remove-tree.js';
import {debianLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, exobuild, exobuildEnv, failure, fixturesDir, makeContext} from './helpers.js';

// The platforms of build-debian-apt.test.ts: the same cached base layout serves both.
const layoutPlatforms = ['linux/ppc64le', 'linux/s390x', 'linux/arm64'];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-warm-'));
const slots = path.join(exobuildEnv.EXOBUILD_CACHE_DIR, 'engine-state');
const slot0 = path.join(slots, 'buildkit-0');
let layout: string;
before(async () => {
	layout = await debianLayout(layoutPlatforms, path.join(fixturesDir, 'debian'));
	// Every test starts from no kept state at all (other e2e files leave theirs).
	const pruned = await exobuild(['prune', '--max-cache-size', '0']);
	assert.equal(pruned.exitCode, 0, failure(pruned));
});
after(async () => removeTree(work));

interface Build {
	readonly stderr: string;
	/** BuildKit's own lines, without the progress time prefix. */
	readonly lines: string[];
	/** When the CLI exited (seconds since the epoch, the clock `date +%s` reads in a RUN step). */
	readonly ended: number;
}

const build = async (context: string, extra: string[] = []): Promise<Build> => {
	const result = await exobuild(['build', '--engine', 'buildkit', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `debian=oci-layout://${layout}`, ...extra, context]);
	assert.equal(result.exitCode, 0, failure(result));
	const stderr = String(result.stderr);
	return {stderr, lines: stderr.split('\n').map(line => line.replace(/^#\s+\d+(?:\.\d+)?s /, '')), ended: Date.now() / 1000};
};

/** Whether BuildKit unpacked a base layer in this build (its `#N extracting sha256:…` lines). */
const extracted = (run: Build): boolean => run.lines.some(line => /^#\d+ extracting sha256:/.test(line));

/** The `#N` step whose name matches, and whether BuildKit reported it CACHED. */
const step = (run: Build, name: RegExp): {cached: boolean} | undefined => {
	const start = run.lines.map(line => /^#(\d+) (.*)$/.exec(line)).find(match => match !== null && name.test(match[2]!));
	if (!start) {
		return undefined;
	}

	return {cached: run.lines.includes(`#${start[1]} CACHED`)};
};

const warnings = (run: Build): string[] => run.stderr.split('\n').filter(line => /kept state .* (cannot be trusted|did not start)/.test(line));

test('a second build reuses the kept state: steps CACHED, the base not imported again (also with --no-cache); the slot is 0700', async () => {
	const context = makeContext(path.join(work, 'reuse'), {Dockerfile: 'FROM debian\nRUN echo reuse > /hi\n'});
	const first = await build(context);
	assert.ok(extracted(first), `the first build imports the base:\n${first.stderr}`);
	assert.equal(step(first, /RUN echo reuse/)?.cached, false);

	const second = await build(context);
	assert.equal(step(second, /RUN echo reuse/)?.cached, true, second.stderr);
	assert.ok(!extracted(second), `the base is not unpacked again:\n${second.stderr}`);

	const noCache = await build(context, ['--no-cache']);
	assert.equal(step(noCache, /RUN echo reuse/)?.cached, false, 'the step runs again');
	assert.ok(!extracted(noCache), `--no-cache runs the steps, the base stays unpacked:\n${noCache.stderr}`);
	assert.deepEqual(warnings(noCache), []);

	for (const dir of [slots, slot0, path.join(slot0, 'root')]) {
		assert.equal(fs.lstatSync(dir).mode & 0o777, 0o700, dir);
	}

	await assertNothingLeft();
});

/** Every regular file under the kept root (the seal's view: not inside snapshot trees). */
const filesOf = (root: string, inside: string): string[] => fs.readdirSync(path.join(root, inside), {withFileTypes: true})
	.filter(entry => entry.isFile()).map(entry => path.join(root, inside, entry.name));

test('truncated or deleted files of a kept state: the next build warns once, starts from an empty state and succeeds', async () => {
	const context = makeContext(path.join(work, 'damage'), {Dockerfile: 'FROM debian\nRUN echo damage > /hi\n'});
	await build(context);
	const root = path.join(slot0, 'root');
	const blobs = path.join('runc-overlayfs', 'content', 'blobs', 'sha256');

	// Truncated: the snapshotter's metadata database.
	fs.truncateSync(path.join(root, 'runc-overlayfs', 'containerdmeta.db'), 0);
	const truncated = await build(context);
	assert.equal(warnings(truncated).length, 1, truncated.stderr);
	assert.match(warnings(truncated)[0]!, /containerdmeta\.db is 0 bytes/);
	assert.ok(extracted(truncated), 'the base is imported again into the new state');

	// Deleted: the largest blob (the base's layer).
	const largest = filesOf(root, blobs).sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0]!;
	fs.rmSync(largest);
	const deleted = await build(context);
	assert.equal(warnings(deleted).length, 1, deleted.stderr);
	assert.match(warnings(deleted)[0]!, /is missing/);

	// Damage the seal cannot see (a database overwritten, same size): buildkitd sets a corrupt bolt
	// database aside itself (`cache.db.*.bak`) and starts afresh; the build succeeds.
	const database = path.join(root, 'cache.db');
	fs.writeFileSync(database, Buffer.alloc(fs.statSync(database).size));
	const zeroed = await build(context);
	assert.ok(warnings(zeroed).length <= 1, zeroed.stderr);

	const healthy = await build(context);
	assert.deepEqual(warnings(healthy), []);
	assert.equal(step(healthy, /RUN echo damage/)?.cached, true);
	await assertNothingLeft();
});

test('two builds of different projects started together take separate slots, both succeed and run side by side', async () => {
	const dockerfile = (name: string): string => `FROM debian\nRUN date +%s.%N > /start && sleep 8 && date +%s.%N > /end && echo ${name} > /name\n`;
	const projects = ['left', 'right'].map(name => makeContext(path.join(work, name), {Dockerfile: dockerfile(name)}));
	// Warm both slots' bases first is not needed: each build imports the base into its own slot if new.
	const outputs = projects.map(project => `${project}-rootfs`);
	const runs = await Promise.all(projects.map(async (project, index) => build(project, ['--no-cache', '-o', `type=local,dest=${outputs[index]}`])));
	for (const run of runs) {
		assert.ok(!run.stderr.includes('waiting for'), run.stderr);
	}

	const times = outputs.map(out => ({start: Number(fs.readFileSync(path.join(out, 'start'), 'utf8')), end: Number(fs.readFileSync(path.join(out, 'end'), 'utf8'))}));
	assert.equal(fs.readFileSync(path.join(outputs[1]!, 'name'), 'utf8'), 'right\n');
	// Neither waited for the other's whole build: each one's RUN began before the other build ended.
	// (Not that the RUN steps overlap: one slot is warm and one imports the base, which under load
	// can take longer than the other's RUN step.)
	const ended = runs.map(run => run.ended);
	assert.ok(times[0]!.start < ended[1]! && times[1]!.start < ended[0]!, `each RUN began before the other build ended: ${JSON.stringify({times, ended})}`);
	assert.ok(fs.existsSync(path.join(slots, 'buildkit-1', 'root')), 'the second build had a slot of its own');
	await assertNothingLeft();
});

test('a state slot that is a symlink is set aside, never followed; prune --max-cache-size 0 removes every slot', async () => {
	const victim = makeContext(path.join(work, 'victim'), {'keep.txt': 'keep\n'});
	await removeTree(slot0);
	fs.symlinkSync(victim, slot0);
	const context = makeContext(path.join(work, 'symlink'), {Dockerfile: 'FROM debian\nRUN echo symlink > /hi\n'});
	const run = await build(context);
	assert.match(run.stderr, /buildkit-0 is a symlink; set aside/);
	assert.deepEqual(fs.readdirSync(victim), ['keep.txt']);
	assert.ok(fs.lstatSync(slot0).isDirectory());

	const pruned = await exobuild(['prune', '--max-cache-size', '0']);
	assert.equal(pruned.exitCode, 0, failure(pruned));
	assert.deepEqual(fs.readdirSync(slots).filter(name => /^buildkit-\d+$/.test(name)), []);
	await assertNothingLeft();
});
