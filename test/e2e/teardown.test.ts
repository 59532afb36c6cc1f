/**
 * Ctrl-C, SIGTERM, an engine crash and a hard kill in the middle of a real emulated build:
 * every sandbox, process, mount and temp dir is gone afterwards (a hard kill's leftovers are
 * reaped by the next run), and the host's binfmt table is untouched.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {execa} from 'execa';
import {busyboxLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, exobuild, failure, fixturesDir, hostBinfmtSnapshot, leftovers, makeContext} from './helpers.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-teardown-'));
let layout: string;
let binfmtBefore: string;
before(async () => {
	layout = await busyboxLayout(['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/arm64', 'linux/amd64'], path.join(fixturesDir, 'busybox'));
	binfmtBefore = hostBinfmtSnapshot();
});
after(() => fs.rmSync(work, {recursive: true, force: true}));

const sleeper = makeContext(path.join(work, 'sleeper'), {Dockerfile: 'FROM busybox\nRUN echo step-is-running && sleep 600\n'});

/** Starts a build whose RUN step sleeps, and resolves once that step is running under emulation. */
const startSleepingBuild = async (dest: string, engine: 'auto' | 'buildkit' | 'buildah' = 'auto') => {
	const child = exobuild(['build', '--engine', engine, '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '--output', `type=oci,dest=${dest}`, sleeper]);
	let seen = '';
	await new Promise<void>((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`the RUN step did not start:\n${seen}`)), 300_000);
		child.stderr!.on('data', (chunk: Buffer) => {
			seen += chunk.toString();
			if (seen.includes('step-is-running')) {
				clearTimeout(timer);
				resolve();
			}
		});
		child.catch(reject);
	});
	return {child};
};

for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
	test(`${signal} during a RUN step stops the build, removes everything and keeps the old output`, async () => {
		const dest = path.join(work, `${signal}.tar`);
		fs.writeFileSync(dest, 'old');
		const {child} = await startSleepingBuild(dest);
		const sent = Date.now();
		child.kill(signal);
		const result = await child;
		assert.equal(result.exitCode, code, result.all);
		assert.ok(Date.now() - sent < 20_000, `stopped in ${Date.now() - sent} ms`);
		assert.match(String(result.stderr), /interrupted/);
		assert.equal(fs.readFileSync(dest, 'utf8'), 'old');
		assert.equal(hostBinfmtSnapshot(), binfmtBefore);
		await assertNothingLeft();
	});
}

/** The pids of `root`'s descendants whose command line matches `pattern` (this build's own, not another's). */
const descendantsMatching = async (root: number, pattern: RegExp): Promise<number[]> => {
	const {stdout} = await execa('ps', ['-eo', 'pid=,ppid=,args=']);
	const rows = stdout.split('\n').map(line => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line)).filter(row => row !== null).map(row => ({pid: Number(row[1]), ppid: Number(row[2]), args: row[3]!}));
	const below = new Set([root]);
	for (let grew = true; grew;) {
		grew = false;
		for (const row of rows) {
			if (below.has(row.ppid) && !below.has(row.pid)) {
				below.add(row.pid);
				grew = true;
			}
		}
	}

	return rows.filter(row => below.has(row.pid) && pattern.test(row.args)).map(row => row.pid);
};

for (const [engine, process] of [['buildkit', /^buildkitd /], ['buildah', /^buildah .* build /]] as const) {
	test(`${engine}: an engine that dies mid-build fails the build with a cause and leaves nothing`, async () => {
		const {child} = await startSleepingBuild(path.join(work, `crash-${engine}.tar`), engine);
		const engines = await descendantsMatching(child.pid!, process);
		assert.ok(engines.length > 0, `the build runs ${engine}`);
		for (const pid of engines) {
			globalThis.process.kill(pid, 'SIGKILL');
		}

		const result = await child;
		assert.equal(result.exitCode, 1, result.all);
		assert.match(String(result.stderr), /^exobuild: /m);
		await assertNothingLeft();
	});
}

test('a run killed with SIGKILL leaves no process; the next run reaps its folders', async () => {
	const {child} = await startSleepingBuild(path.join(work, 'killed.tar'));
	child.kill('SIGKILL');
	await child;
	// The sandbox dies with its owner (parent-death signal), but the run folders stay behind.
	for (let attempt = 0; attempt < 100 && (await leftovers()).processes.length > 0; attempt++) {
		await new Promise(resolve => setTimeout(resolve, 100));
	}

	const left = await leftovers();
	assert.deepEqual(left.processes, []);
	assert.deepEqual(left.mounts, []);
	assert.ok(left.runs.length > 0, 'a killed run leaves its folders for the next run to reap');

	const quick = makeContext(path.join(work, 'quick'), {Dockerfile: 'FROM busybox\nRUN true\n'});
	const next = await exobuild(['build', '--progress', 'plain', '--platform', 'linux/riscv64', '--build-context', `busybox=oci-layout://${layout}`, quick]);
	assert.equal(next.exitCode, 0, failure(next));
	assert.match(String(next.stderr), /removed \d+ left by killed runs/);
	assert.equal(hostBinfmtSnapshot(), binfmtBefore);
	await assertNothingLeft();
});
