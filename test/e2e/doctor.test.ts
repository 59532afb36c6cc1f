/**
 * `exobuild doctor` through the CLI: without a builder image (it makes none), against the real
 * builder image (a real sandbox proves ppc64le and s390x, then is gone, and the host's
 * binfmt_misc is untouched), and the apple-container driver's host rows through the simulator.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {assertNothingLeft, exobuild, failure, hostBinfmtSnapshot, repoRoot} from './helpers.js';

interface Report {
	ok: boolean;
	checks: Array<{area: string; check: string; status: 'ok' | 'warn' | 'fail'; detail: string; fix?: string}>;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-doctor-'));
after(() => fs.rmSync(work, {recursive: true, force: true}));

const row = (report: Report, area: string, check: string) => {
	const found = report.checks.find(candidate => candidate.area === area && candidate.check === check);
	assert.ok(found, `row ${area} ${check} in ${JSON.stringify(report.checks)}`);
	return found;
};

test('no builder image: doctor makes none, fails that row with the fix, and skips the platforms', async () => {
	const cache = path.join(work, 'empty-cache');
	const result = await exobuild(['doctor', '--platform', 'linux/ppc64le,linux/s390x', '--json'], {env: {EXOBUILD_CACHE_DIR: cache}});
	assert.equal(result.exitCode, 1, result.all);
	const report = JSON.parse(String(result.stdout)) as Report;
	assert.equal(report.ok, false);
	assert.deepEqual(row(report, 'builder', 'image'), {...row(report, 'builder', 'image'), status: 'fail', fix: 'exobuild builder build'});
	for (const id of ['linux/ppc64le', 'linux/s390x']) {
		const skipped = row(report, id, 'handler');
		assert.equal(skipped.status, 'warn');
		assert.match(skipped.detail, /^skipped: there is no current builder image/);
	}

	assert.equal(report.checks.some(candidate => candidate.area === 'sandbox'), false, 'no sandbox was started');
	assert.equal(fs.existsSync(path.join(cache, 'builder-images')) && fs.readdirSync(path.join(cache, 'builder-images')).some(name => name.endsWith('.tar')), false, 'no builder image was made');

	const table = await exobuild(['doctor', '--platform', 'linux/ppc64le'], {env: {EXOBUILD_CACHE_DIR: cache}});
	assert.equal(table.exitCode, 1);
	assert.match(String(table.stdout), /^AREA\s+CHECK\s+STATUS\s+DETAIL\n/);
	assert.match(String(table.stdout), /\nfix: builder image: exobuild builder build\n/);
});

test('bad arguments are usage errors (exit 2)', async () => {
	const platform = await exobuild(['doctor', '--platform', 'linux/mips64']);
	assert.equal(platform.exitCode, 2);
	assert.match(String(platform.stderr), /^exobuild: unknown platform "linux\/mips64"/);
	const driver = await exobuild(['doctor', '--driver', 'docker']);
	assert.equal(driver.exitCode, 2);
});

test('with the real builder image: ppc64le and s390x proven in a sandbox that is then gone; the host binfmt_misc is unchanged', async t => {
	if ((await exobuild(['builder', 'inspect'])).exitCode !== 0) {
		t.skip('no builder image in the e2e cache yet (other e2e tests or `exobuild builder build` make it)');
		return;
	}

	const before = hostBinfmtSnapshot();
	const result = await exobuild(['doctor', '--platform', 'linux/ppc64le,linux/s390x', '--json']);
	assert.equal(result.exitCode, 0, failure(result));
	const report = JSON.parse(String(result.stdout)) as Report;
	assert.equal(report.ok, true);
	for (const check of ['os', 'kernel', 'newuidmap/newgidmap', 'subordinate ids', 'unshare', 'setpriv', 'user namespaces', 'host binfmt_misc', 'driver']) {
		assert.equal(row(report, 'host', check).status, 'ok', check);
	}

	assert.equal(row(report, 'builder', 'image').status, 'ok');
	assert.match(row(report, 'builder', 'archive').detail, /every blob matches its digest/);
	for (const check of ['start', 'agent', 'stop']) {
		assert.equal(row(report, 'sandbox', check).status, 'ok', check);
	}

	for (const [id, machine] of [['linux/ppc64le', 'ppc64le'], ['linux/s390x', 's390x']] as const) {
		assert.match(row(report, id, 'emulator').detail, new RegExp(`/qemu-${machine}(-static)?: qemu-${machine} version \\d+\\.`));
		const handler = row(report, id, 'handler');
		assert.equal(handler.status, 'ok');
		assert.match(handler.detail, new RegExp(`^qemu-${machine} registered by .*; the probe printed ${machine}$`));
	}

	assert.deepEqual(report.checks.map(candidate => candidate.area).filter(area => area.startsWith('linux/')), ['linux/ppc64le', 'linux/ppc64le', 'linux/s390x', 'linux/s390x'], 'only the platforms asked for');
	assert.equal(hostBinfmtSnapshot(), before, 'the host binfmt_misc is unchanged');
	await assertNothingLeft();
});

test('apple-container through the simulator: a stopped system fails with its fix, an older CLI is a warning', async () => {
	const simulator = path.join(repoRoot, 'test', 'simulators', 'apple-container', 'container');
	const env = {EXOBUILD_CONTAINER_CLI: simulator, CONTAINER_SIM_ROOT: path.join(work, 'sim'), CONTAINER_SIM_VERSION: '1.1.0'};
	const result = await exobuild(['doctor', '--driver', 'apple-container', '--platform', 'linux/ppc64le', '--json'], {env});
	assert.equal(result.exitCode, 1, result.all);
	const report = JSON.parse(String(result.stdout)) as Report;
	const version = row(report, 'host', 'container version');
	assert.deepEqual([version.status, version.detail], ['warn', '1.1.0 (works from 0.12.0; 1.2.0 or later is recommended)']);
	const system = row(report, 'host', 'container system');
	assert.equal(system.status, 'fail');
	assert.match(system.fix ?? '', /container system start/);
	assert.equal(row(report, 'vm', '--virtualization').status, 'ok');
	assert.match(row(report, 'linux/ppc64le', 'handler').detail, /^skipped: /);
});
