/** `exobuild doctor`: rendering, JSON shape and exit code from injected rows; agent events → rows; the Mac's VM option rows. */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {z} from 'zod';
import type {AgentEvent} from '../../src/agent/contract.js';
import {defaultDoctorPlatforms, proveRows, skippedRows} from '../../src/doctor/checks.js';
import {doctorExitCode, renderJson, renderTable, type CheckRow} from '../../src/doctor/render.js';
import {parsePlatform, supportedPlatformIds} from '../../src/platforms/parse.js';
import {appleChipGeneration, macosMajor, rosettaRow, virtualizationRow} from '../../src/sandboxes/apple-container/mac-host.js';

const rows: CheckRow[] = [
	{area: 'host', check: 'kernel', status: 'ok', detail: '6.18.1'},
	{area: 'builder', check: 'stale images', status: 'warn', detail: '1 made from other recipe versions', fix: 'exobuild prune --builders'},
	{area: 'linux/s390x', check: 'handler', status: 'fail', detail: 'E_BINFMT_REGISTER: registering\nqemu-s390x failed', fix: 'report it'},
];

const jsonShape = z.object({
	ok: z.boolean(),
	checks: z.array(z.strictObject({area: z.string(), check: z.string(), status: z.enum(['ok', 'warn', 'fail']), detail: z.string(), fix: z.string().optional()})),
}).strict();

test('table: header, one line per row, a fix: line for each warn and fail row, a summary', () => {
	const text = renderTable(rows);
	const lines = text.split('\n');
	assert.match(lines[0]!, /^AREA\s+CHECK\s+STATUS\s+DETAIL$/);
	assert.match(lines[1]!, /^host\s+kernel\s+ok\s+6\.18\.1$/);
	assert.equal(lines[0]!.indexOf('STATUS'), lines[3]!.indexOf('fail'), 'columns line up');
	assert.match(lines[3]!, /registering qemu-s390x failed$/, 'a multi-line detail is one line');
	assert.deepEqual(lines.filter(line => line.startsWith('fix:')), [
		'fix: builder stale images: exobuild prune --builders',
		'fix: linux/s390x handler: report it',
	]);
	assert.match(text, /1 failed, 1 warning, 1 ok\n$/);
	assert.doesNotMatch(renderTable(rows.slice(0, 1)), /fix:/);
	assert.match(renderTable(rows.slice(0, 1)), /all 1 checks passed/);
});

test('JSON: {ok, checks} with every row as given; ok and the exit code follow fail rows only', () => {
	const parsed = jsonShape.parse(JSON.parse(renderJson(rows)));
	assert.equal(parsed.ok, false);
	assert.deepEqual(parsed.checks, rows);
	assert.equal(doctorExitCode(rows), 1);
	const warnOnly = rows.slice(0, 2);
	assert.equal(jsonShape.parse(JSON.parse(renderJson(warnOnly))).ok, true);
	assert.equal(doctorExitCode(warnOnly), 0, 'warnings do not fail doctor');
	assert.equal(doctorExitCode([]), 0);
});

test('default platforms: every one of the table but the native ones', () => {
	const ids = (machine: string) => defaultDoctorPlatforms(machine).map(platform => platform.id);
	assert.deepEqual(ids('x86_64'), supportedPlatformIds().filter(id => id !== 'linux/amd64' && id !== 'linux/386'));
	assert.deepEqual(ids('aarch64'), supportedPlatformIds().filter(id => id !== 'linux/arm64'));
});

const hello: AgentEvent = {v: 1, event: 'hello', agentVersion: '0.1.0', machine: 'x86_64', kernel: '6.18.1', engine: 'buildah'};
const platforms = ['linux/ppc64le', 'linux/s390x', 'linux/amd64', 'linux/riscv64'].map(parsePlatform);

test('prove events → rows: proven, native, failed on its own, and not reported', () => {
	const events: AgentEvent[] = [
		hello,
		{v: 1, event: 'phase-start', phase: 'binfmt'},
		{v: 1, event: 'handler', platform: 'linux/ppc64le', mode: 'emulated', registeredBy: 'agent', handler: 'qemu-ppc64le', emulator: '/usr/bin/qemu-ppc64le-static', emulatorVersion: 'qemu-ppc64le version 10.0.13', flags: 'POCF', proof: 'ppc64le'},
		{v: 1, event: 'error', code: 'E_EMULATOR_MISSING', message: 'no qemu-s390x emulator in the builder image', platform: 'linux/s390x'},
		{v: 1, event: 'handler', platform: 'linux/amd64', mode: 'native', registeredBy: 'none', proof: 'x86_64'},
	];
	const result = proveRows(platforms, {events, exitCode: 1, lastStderr: 'Segmentation fault'});
	const brief = result.map(row => `${row.area} ${row.check} ${row.status}`);
	assert.deepEqual(brief, [
		'sandbox agent ok',
		'linux/ppc64le emulator ok', 'linux/ppc64le handler ok',
		'linux/s390x emulator fail',
		'linux/amd64 emulator ok', 'linux/amd64 handler ok',
		'linux/riscv64 handler fail',
	]);
	assert.match(result[1]!.detail, /qemu-ppc64le-static: qemu-ppc64le version 10\.0\.13/);
	assert.match(result[2]!.detail, /flags POCF.*printed ppc64le/);
	assert.match(result[3]!.fix!, /exobuild builder build --force/);
	assert.match(result[6]!.detail, /ended without reporting it \(exit 1: Segmentation fault\)/);
	for (const row of result.filter(row => row.status !== 'ok')) {
		assert.ok(row.fix, `${row.area} ${row.check} has a fix`);
	}
});

test('a terminal agent error fails the agent row, and every platform is not proven with its hint', () => {
	const result = proveRows(platforms.slice(0, 2), {events: [hello, {v: 1, event: 'error', code: 'E_BINFMT_MOUNT', message: 'cannot mount'}], exitCode: 1});
	assert.deepEqual(result.map(row => `${row.area} ${row.check} ${row.status}`), ['sandbox agent fail', 'linux/ppc64le handler fail', 'linux/s390x handler fail']);
	assert.match(result[0]!.detail, /^E_BINFMT_MOUNT: cannot mount/);
	assert.match(result[1]!.detail, /stopped before it/);
	const broken = proveRows(platforms.slice(0, 1), {events: [], exitCode: 0, protocolError: 'not JSON'});
	assert.match(broken[0]!.detail, /broke the event contract/);
	const skipped = skippedRows(platforms.slice(0, 1), 'no builder image', 'exobuild builder build');
	assert.deepEqual(skipped, [{area: 'linux/ppc64le', check: 'handler', status: 'warn', detail: 'skipped: no builder image', fix: 'exobuild builder build'}]);
});

test('the Mac: chip generation, macOS version, and what --virtualization and --rosetta need', () => {
	assert.equal(appleChipGeneration('Apple M3 Pro'), 3);
	assert.equal(appleChipGeneration('Apple M1'), 1);
	assert.equal(appleChipGeneration('Intel(R) Core(TM) i9-9980HK CPU @ 2.40GHz'), undefined);
	assert.equal(macosMajor('15.2'), 15);
	assert.equal(macosMajor(undefined, '24.1.0'), 15);
	assert.equal(macosMajor(undefined, '25.0.0'), 26);

	const m3 = {macos: '15.1', chip: 'Apple M3 Max', appleSilicon: true, rosettaInstalled: true};
	const m1 = {macos: '14.6', chip: 'Apple M1', appleSilicon: true, rosettaInstalled: false};
	const intel = {macos: '15.0', chip: 'Intel(R) Core(TM) i7', appleSilicon: false, rosettaInstalled: false};
	const virtualization = virtualizationRow(m3, false, true);
	assert.equal(virtualization.status, 'ok');
	assert.match(virtualization.detail, /kernel with KVM \(the default kernel has none\).*QEMU user emulation does not need it/);
	const old = virtualizationRow(m1, false, true);
	assert.equal(old.status, 'ok', 'not asked for: not a problem');
	assert.match(old.detail, /not available: needs an M3 or later chip \(this is Apple M1\) and macOS 15 or later \(this is 14\.6\)/);
	assert.equal(virtualizationRow(m1, true, true).status, 'fail');
	assert.equal(rosettaRow(m3, false, true).status, 'ok');
	assert.deepEqual([rosettaRow(m1, false, true).status, rosettaRow(m1, false, true).fix], ['warn', 'softwareupdate --install-rosetta --agree-to-license']);
	assert.match(rosettaRow(intel, false, true).detail, /needs Apple silicon/);
	assert.equal(rosettaRow(intel, true, true).status, 'fail');
	assert.match(virtualizationRow(m3, false, false).detail, /not a Mac/);
});
