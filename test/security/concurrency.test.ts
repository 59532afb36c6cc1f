/**
 * Eight builds at once through the CLI (issue 8, finding 12): examples/hello for one foreign
 * platform from a busybox base layout, in different projects and the same project twice, with
 * `exobuild prune --max-cache-size 0` running over and over meanwhile. Every build exits 0 with
 * the right image, nothing is left in runs/, the victim folder and the host's binfmt_misc are
 * unchanged.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {inspectArchive} from '../../src/oci/index.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {exobuild, exobuildEnv, failure, fixturesDir, hostBinfmtSnapshot, leftovers, repoRoot} from '../e2e/helpers.js';
import {makeVictim, type Victim} from './victim.js';

const platform = 'linux/riscv64';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-sec-concurrency-'));
let layout: string;
let victim: Victim;
let binfmtBefore: string;

before(async () => {
	layout = await busyboxLayout([platform], path.join(fixturesDir, 'busybox'));
	victim = makeVictim();
	binfmtBefore = hostBinfmtSnapshot();
});
after(() => {
	fs.rmSync(work, {recursive: true, force: true});
	victim.remove();
});

/** A copy of examples/hello whose message names it (so each output is told apart). */
const project = (name: string): string => {
	const dir = path.join(work, name);
	fs.cpSync(path.join(repoRoot, 'examples', 'hello'), dir, {recursive: true});
	fs.writeFileSync(path.join(dir, 'message.txt'), `message of ${name}\n`);
	return dir;
};

test('8 builds at once (6 projects, one of them twice more) with prune --max-cache-size 0 running: all succeed, nothing is left', async () => {
	const projects = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'].map(name => ({name, dir: project(name)}));
	// The same project three times: two of its builds wait for its cache lock.
	const builds = [...projects, projects[0]!, projects[0]!].map((entry, index) => ({...entry, dest: path.join(work, `out-${index}.oci.tar`)}));
	let building = true;
	const prunes: Array<{exitCode: number | undefined; all: string | undefined}> = [];
	const pruning = (async () => {
		while (building) {
			const result = await exobuild(['prune', '--max-cache-size', '0']);
			prunes.push({exitCode: result.exitCode, all: result.all});
			await new Promise(resolve => setTimeout(resolve, 300));
		}
	})();
	const results = await Promise.all(builds.map(async build => exobuild([
		'build', '--progress', 'plain', '--platform', platform, '--build-context', `busybox=oci-layout://${layout}`,
		'--output', `type=oci,dest=${build.dest}`, build.dir,
	])));
	building = false;
	await pruning;

	for (const [index, result] of results.entries()) {
		assert.equal(result.exitCode, 0, `build ${index} (${builds[index]!.name}): ${failure(result, 25)}`);
		assert.match(String(result.stdout).trim(), /^sha256:[a-f0-9]{64}$/);
		const archive = await inspectArchive(builds[index]!.dest);
		const [image] = archive.images;
		assert.equal(image?.platform, platform);
		assert.equal((await image.readFile('/message.txt'))?.toString('utf8'), `message of ${builds[index]!.name}\n`);
		assert.match((await image.readFile('/report.txt'))?.toString('utf8') ?? '', /^hello from riscv64 \(TARGETPLATFORM=linux\/riscv64/);
	}

	assert.ok(prunes.length > 0, 'prune ran during the builds');
	for (const prune of prunes) {
		assert.equal(prune.exitCode, 0, failure(prune));
	}

	// Other checkouts may be building on this machine: only this cache's runs and processes count.
	const mine = async () => {
		const left = await leftovers();
		return {runs: left.runs, processes: left.processes.filter(line => line.includes(exobuildEnv.EXOBUILD_CACHE_DIR) || line.includes(work))};
	};

	for (let attempt = 0; attempt < 50 && JSON.stringify(await mine()) !== JSON.stringify({runs: [], processes: []}); attempt++) {
		await new Promise(resolve => setTimeout(resolve, 100));
	}

	assert.deepEqual(await mine(), {runs: [], processes: []}, 'nothing is left in runs/ and no process of these builds runs');
	victim.assertUnchanged();
	assert.equal(hostBinfmtSnapshot(), binfmtBefore, 'host binfmt_misc unchanged');
});
