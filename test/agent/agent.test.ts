/**
 * Agent-level tests: the real vm-image/exobuild-agent on this host, in a private user namespace
 * (full id map, own pid and mount namespaces, so its binfmt_misc is its own), with the host's
 * static QEMU emulators and real probe binaries of each architecture, running EnginePlans written
 * by hand and serialized by the host's agentArgs. The happy path of BuildKit and tonistiigi/binfmt
 * runs the real programs from ../shared/upstream (skipped, with the reason, where absent); the
 * failing-* fixtures exist only to inject failures.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {parseAgentLine, type AgentEvent} from '../../src/agent/contract.js';
import {agentArgs, platformHandlerArgs} from '../../src/agent/agent-args.js';
import type {EnginePlan, EngineStep} from '../../src/engines/plan.js';
import {parsePlatform} from '../../src/platforms/parse.js';
import {PlainReporter} from '../../src/progress/plain-reporter.js';
import {RawJsonReporter} from '../../src/progress/quiet-reporters.js';
import {StepTracker} from '../../src/progress/steps.js';
import {runInNamespaces} from '../../src/sandboxes/linux-userns/namespaces.js';
import {busyboxOf} from '../fixtures/base-images.js';
import {extractUpstream, upstreamSkip} from '../fixtures/upstream.js';
import {fixturesDir, hostBinfmtSnapshot, repoRoot} from '../e2e/helpers.js';

const agent = path.join(repoRoot, 'vm-image', 'exobuild-agent');
const failing = (name: string): string => path.join(repoRoot, 'test', 'fixtures', `failing-${name}`);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-agent-'));
const probes = path.join(work, 'probes');
/** A minimal valid OCI image layout, copied by plans as the engine's output. */
const layoutSource = path.join(work, 'layout-src');
let binfmtBefore: string;

const writeBlob = (dir: string, text: string): {digest: string; size: number} => {
	const hex = crypto.createHash('sha256').update(text).digest('hex');
	fs.writeFileSync(path.join(dir, 'blobs', 'sha256', hex), text);
	return {digest: `sha256:${hex}`, size: Buffer.byteLength(text)};
};

before(async () => {
	binfmtBefore = hostBinfmtSnapshot();
	for (const id of ['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/amd64', 'linux/arm64']) {
		const platform = parsePlatform(id);
		fs.mkdirSync(path.join(probes, platform.arch.qemu), {recursive: true});
		fs.copyFileSync(await busyboxOf(path.join(fixturesDir, 'busybox'), platform), path.join(probes, platform.arch.qemu, 'busybox'));
	}

	fs.mkdirSync(path.join(layoutSource, 'blobs', 'sha256'), {recursive: true});
	const config = writeBlob(layoutSource, '{"architecture":"ppc64le","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
	const manifest = writeBlob(layoutSource, JSON.stringify({schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {mediaType: 'application/vnd.oci.image.config.v1+json', ...config}, layers: []}));
	fs.writeFileSync(path.join(layoutSource, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
	fs.writeFileSync(path.join(layoutSource, 'index.json'), JSON.stringify({schemaVersion: 2, manifests: [{mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest}]}));
});
after(() => {
	fs.rmSync(work, {recursive: true, force: true});
	assert.equal(hostBinfmtSnapshot(), binfmtBefore, 'the host binfmt_misc is unchanged');
});

interface Dirs {
	readonly dir: string;
	readonly state: string;
	readonly output: string;
	readonly daemonLog: string;
}

interface AgentRun extends Dirs {
	exitCode: number | undefined;
	events: AgentEvent[];
	stderr: string[];
}

let runCount = 0;
const newDirs = (): Dirs => {
	const dir = path.join(work, `run-${++runCount}`);
	fs.mkdirSync(dir, {recursive: true});
	return {dir, state: path.join(dir, 'state'), output: path.join(dir, 'layout'), daemonLog: path.join(dir, 'out', 'engine-daemon.log')};
};

/** Runs the agent in a private user namespace with a fresh /proc; every stdout line must be on contract. */
const runAgent = async (dirs: Dirs, args: readonly string[], options: {path?: readonly string[]; env?: Record<string, string>; signal?: AbortSignal} = {}): Promise<AgentRun> => {
	const environment = {
		PATH: [...(options.path ?? []), '/usr/sbin', '/usr/bin', '/sbin', '/bin'].join(':'),
		EXOBUILD_PROBE_DIR: probes,
		...options.env,
	};
	const events: AgentEvent[] = [];
	const stderr: string[] = [];
	const exit = await runInNamespaces([
		'/bin/sh', '-c', 'mount -t proc proc /proc && exec env -i "$@"', 'sh',
		...Object.entries(environment).map(([key, value]) => `${key}=${value}`),
		agent, ...args,
	], {
		onStdoutLine(line) {
			events.push(parseAgentLine(line));
		},
		onStderrLine(line) {
			stderr.push(line);
		},
		...(options.signal === undefined ? {} : {signal: options.signal}),
	});
	return {...dirs, exitCode: exit.exitCode, events, stderr};
};

/** Runs a plan (made for the run's folders) through the host's serializer. */
const runPlan = async (ids: readonly string[], makePlan: (dirs: Dirs) => EnginePlan, options: {path?: readonly string[]; env?: Record<string, string>; debug?: boolean; hangTimeoutSeconds?: number} = {}): Promise<AgentRun> => {
	const dirs = newDirs();
	const args = agentArgs(ids.map(id => parsePlatform(id)), makePlan(dirs), {
		hangTimeoutSeconds: options.hangTimeoutSeconds ?? 0, secretsFromStdin: 0, debug: options.debug ?? false,
		stateDir: dirs.state, outputLayout: dirs.output, daemonLog: dirs.daemonLog,
	});
	return runAgent(dirs, args, options);
};

const sh = (script: string, ...args: string[]): string[] => ['/bin/sh', '-c', script, 'sh', ...args];
const run = (argv: readonly string[], extra: Partial<Extract<EngineStep, {kind: 'run'}>> = {}): EngineStep => ({
	kind: 'run', phase: 'build', argv, errorCode: 'E_BUILD_FAILED', message: 'the build failed', watch: false, ...extra,
});
const copyLayout = (dirs: Dirs): EngineStep => run(['cp', '-R', layoutSource, dirs.output], {phase: 'export', errorCode: 'E_EXPORT_FAILED', message: 'writing the OCI layout failed'});
const plan = (steps: readonly EngineStep[], engine: EnginePlan['engine'] = 'buildkit'): EnginePlan => ({engine, steps, tmpfs: []});

const ofType = <E extends AgentEvent['event']>(events: readonly AgentEvent[], type: E): Array<Extract<AgentEvent, {event: E}>> =>
	events.filter((event): event is Extract<AgentEvent, {event: E}> => event.event === type);

const terminalError = (agentRun: AgentRun) => {
	const errors = ofType(agentRun.events, 'error');
	assert.equal(errors.length, 1, JSON.stringify(agentRun.events));
	return errors[0]!;
};

const phasesOf = (events: readonly AgentEvent[]): string[] => events.flatMap(event => (event.event === 'phase-start' ? [`${event.phase}${event.platform ? ` ${event.platform}` : ''}`] : []));

test('bad arguments: exit 2 with E_AGENT_USAGE', async () => {
	const handlers = platformHandlerArgs([parsePlatform('linux/ppc64le')]);
	const base = ['build', '--engine', 'buildkit', ...handlers, '--state-dir', '/tmp/x', '--output', '/tmp/x/layout'];
	for (const args of [
		[], ['frobnicate'], ['build', ...handlers], base, ['build', '--bogus', 'x'],
		[...base, '--step', 'run', 'build', '-', 'E_BUILD_FAILED', '-', '-', '3', 'true', '0'],
		[...base, '--step', 'compile', 'build', '-', '-', '-', '-', '1', 'true', '0'],
		[...base, '--step', 'run', 'build', '-', '-', '-', '-', '1', 'true', '2', 'a', 'b'],
		[...base, '--step', 'run', 'build', '-', 'E_BUILD_FAILED', '-', '$(id)', '1', 'true', '0'],
		['prove', ...handlers, '--output', '/tmp/x'],
	]) {
		const agentRun = await runAgent(newDirs(), args);
		assert.equal(agentRun.exitCode, 2, args.join(' '));
		assert.equal(terminalError(agentRun).code, 'E_AGENT_USAGE');
	}
});

test('a plan runs as given: handlers proven, phases in order, every argv word intact (no eval), result from the layout', async () => {
	const ids = ['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/amd64'];
	const pwned = path.join(work, 'pwned');
	const words = ['two words', '"quoted"', "it's", `$(touch ${pwned})`, `\`touch ${pwned}\``, String.raw`\back\slash`, '*', '', '-', '--step', 'a;b|c&d', 'tab\there', 'ünïcödé', '0'];
	const agentRun = await runPlan(ids, dirs => plan([
		{kind: 'version', argv: sh('echo "engine 1.2.3"; echo second line')},
		run(sh('for word in "$@"; do printf "<%s>\\n" "$word"; done', ...words), {platform: 'linux/ppc64le'}),
		copyLayout(dirs),
	]));
	assert.equal(agentRun.exitCode, 0, agentRun.stderr.join('\n') + JSON.stringify(agentRun.events));
	assert.equal(fs.existsSync(pwned), false, 'no word was evaluated');
	assert.deepEqual(ofType(agentRun.events, 'log').filter(event => event.source === 'engine').map(event => [event.platform, event.line]), words.map(word => ['linux/ppc64le', `<${word}>`]));

	const handlers = ofType(agentRun.events, 'handler');
	assert.deepEqual(handlers.map(h => [h.platform, h.mode]), [['linux/ppc64le', 'emulated'], ['linux/s390x', 'emulated'], ['linux/riscv64', 'emulated'], ['linux/amd64', 'native']]);
	for (const handler of handlers.filter(h => h.mode === 'emulated')) {
		const arch = handler.platform.split('/')[1];
		assert.equal(handler.handler, `qemu-${arch}`);
		assert.equal(handler.registeredBy, 'agent', 'no binfmt in the image: the agent registers');
		assert.match(handler.emulator ?? '', new RegExp(`/qemu-${arch}(-static)?$`));
		assert.match(handler.emulatorVersion ?? '', /^qemu-\S+ version \d+\./);
		assert.equal([...(handler.flags ?? '')].sort().join(''), 'CFOP');
		assert.equal(handler.proof, arch);
	}

	assert.equal(handlers.find(h => h.platform === 'linux/amd64')?.proof, 'x86_64');
	assert.deepEqual(ofType(agentRun.events, 'engine').map(event => [event.engine, event.version, event.platforms]), [['buildkit', 'engine 1.2.3', ids]]);
	assert.deepEqual(phasesOf(agentRun.events), ['binfmt', 'engine-start', 'build linux/ppc64le', 'export']);
	assert.equal(ofType(agentRun.events, 'phase-start').length, ofType(agentRun.events, 'phase-end').length);
	const result = ofType(agentRun.events, 'result')[0]!;
	const index = JSON.parse(fs.readFileSync(path.join(agentRun.output, 'index.json'), 'utf8')) as {manifests: Array<{digest: string}>};
	assert.deepEqual([result.engine, result.layout, result.digest, result.platforms], ['buildkit', agentRun.output, index.manifests[0]!.digest, ids]);
	assert.match(ofType(agentRun.events, 'hello')[0]!.agentVersion, /^unstamped$/, 'the source tree\'s agent is not stamped');
});

test('tonistiigi/binfmt (the real one) registers through -mount DIR, with QEMU_PRESERVE_ARGV0, and its JSON is what counts', {skip: upstreamSkip('binfmt')}, async () => {
	const binDir = await extractUpstream('binfmt', path.join(work, 'binfmt'));
	// The builder images have QEMU at /usr/bin/qemu-ARCH; this host has Debian's -static names.
	const qemuDir = path.join(work, 'qemu');
	fs.mkdirSync(qemuDir, {recursive: true});
	for (const arch of ['ppc64le', 's390x']) {
		fs.symlinkSync(`/usr/bin/qemu-${arch}-static`, path.join(qemuDir, `qemu-${arch}`));
	}

	// A mount point that is not binfmt's default /proc/sys/fs/binfmt_misc (the agent's fallback case).
	const mountPoint = path.join(work, 'binfmt-mount');
	const dirs = newDirs();
	const agentRun = await runAgent(dirs, ['prove', '--engine', 'buildkit', ...platformHandlerArgs(['linux/ppc64le', 'linux/s390x'].map(id => parsePlatform(id))), '--state-dir', dirs.state], {
		path: [binDir], env: {QEMU_BINARY_PATH: qemuDir, EXOBUILD_BINFMT_DIR: mountPoint},
	});
	assert.equal(agentRun.exitCode, 0, agentRun.stderr.join('\n') + JSON.stringify(agentRun.events));
	for (const handler of ofType(agentRun.events, 'handler')) {
		const arch = handler.platform.split('/')[1]!;
		assert.equal(handler.registeredBy, 'binfmt');
		assert.equal(handler.emulator, path.join(qemuDir, `qemu-${arch}`), 'the interpreter binfmt registered');
		assert.equal([...(handler.flags ?? '')].sort().join(''), 'CFOP', 'CF from binfmt, P from QEMU_PRESERVE_ARGV0, O implied by C');
		assert.equal(handler.proof, arch);
	}

	assert.equal(ofType(agentRun.events, 'handler').length, 2);
});

test('a binfmt that exits 0 without registering: E_BINFMT_REGISTER (its JSON lacks the emulator)', async () => {
	const agentRun = await runPlan(['linux/s390x'], dirs => plan([copyLayout(dirs)]), {path: [failing('binfmt')]});
	assert.equal(agentRun.exitCode, 1);
	const error = terminalError(agentRun);
	assert.deepEqual([error.code, error.platform], ['E_BINFMT_REGISTER', 'linux/s390x']);
	assert.match(error.message, /did not list qemu-s390x/);
});

test('a handler whose probe does not print the expected architecture fails its proof', async () => {
	const platform = parsePlatform('linux/ppc64le');
	const dirs = newDirs();
	const spec = platformHandlerArgs([platform])[3]!.replace(/:ppc64le$/, ':s390x');
	const agentRun = await runAgent(dirs, ['prove', '--engine', 'buildah', '--platform', platform.id, '--handler', spec]);
	assert.equal(agentRun.exitCode, 1);
	assert.deepEqual(ofType(agentRun.events, 'error').map(error => [error.code, error.platform]), [['E_HANDLER_PROOF', 'linux/ppc64le']]);
	assert.match(ofType(agentRun.events, 'error')[0]!.message, /printed "ppc64le", expected "s390x"/);
});

const crashingDaemon = (extra: readonly string[] = []): EnginePlan => plan([
	{kind: 'daemon', argv: ['buildkitd', '--addr', 'unix:///run/x.sock', ...extra], rootlessArgs: ['--rootless']},
	{kind: 'ready', argv: sh('exit 1'), timeoutMs: 30_000},
	run(['true']),
]);

test('a daemon that crashes at start: E_ENGINE_START naming its log; its output only in the log file (events only with --debug)', async () => {
	const agentRun = await runPlan(['linux/ppc64le'], () => crashingDaemon(), {path: [failing('buildkit')], env: {FAILING_BUILDKITD_MODE: 'crash'}});
	assert.equal(agentRun.exitCode, 1);
	const error = terminalError(agentRun);
	assert.equal(error.code, 'E_ENGINE_START');
	assert.ok(error.message.includes(`its log: ${agentRun.daemonLog}`), error.message);
	assert.match(error.message, /failed to create worker/, 'the end of the daemon log is in the message');
	assert.match(fs.readFileSync(agentRun.daemonLog, 'utf8'), /level=fatal msg="failed to create worker/);
	assert.match(fs.readFileSync(agentRun.daemonLog, 'utf8'), /^argv: --addr unix:\/\/\/run\/x\.sock --rootless$/m, 'rootlessArgs appended in a user namespace');
	assert.equal(ofType(agentRun.events, 'log').some(event => event.line.includes('level=')), false, 'no daemon line as an event');

	const debug = await runPlan(['linux/ppc64le'], () => crashingDaemon(), {path: [failing('buildkit')], env: {FAILING_BUILDKITD_MODE: 'crash'}, debug: true});
	assert.equal(terminalError(debug).code, 'E_ENGINE_START');
	assert.ok(ofType(debug.events, 'log').some(event => event.source === 'daemon' && event.line.includes('level=fatal')), JSON.stringify(debug.events));
	assert.match(fs.readFileSync(debug.daemonLog, 'utf8'), /level=fatal/, 'with --debug the log file is written too');
});

test('a run step that fails after the daemon died: the message says so and names the daemon log', async () => {
	const agentRun = await runPlan(['linux/ppc64le'], () => plan([
		{kind: 'daemon', argv: ['buildkitd'], rootlessArgs: []},
		run(sh('sleep 0.5; echo "error: connection refused" >&2; exit 1'), {message: 'the build failed'}),
	]), {path: [failing('buildkit')], env: {FAILING_BUILDKITD_MODE: 'crash'}});
	const error = terminalError(agentRun);
	assert.equal(error.code, 'E_BUILD_FAILED');
	assert.ok(error.message.startsWith(`the build failed (exit code 1); the engine daemon is gone (its log: ${agentRun.daemonLog}); its last lines: `), error.message);
});

test('a daemon that never answers: E_ENGINE_START after the timeout; it gets exactly one SIGTERM and is waited for', async () => {
	const marks = path.join(work, 'never-ready');
	fs.mkdirSync(marks);
	const agentRun = await runPlan(['linux/ppc64le'], () => plan([
		{kind: 'daemon', argv: ['buildkitd'], rootlessArgs: []},
		{kind: 'ready', argv: sh('exit 1'), timeoutMs: 1500},
	]), {path: [failing('buildkit')], env: {FAILING_BUILDKITD_MODE: 'never-ready', FAILING_BUILDKITD_DIR: marks}});
	assert.equal(agentRun.exitCode, 1);
	assert.match(terminalError(agentRun).message, /no answer within 1500 ms/);
	assert.equal(fs.readFileSync(path.join(marks, 'sigterms'), 'utf8'), 'TERM\n');
});

test('a platform the engine does not list: E_PLATFORM_UNSUPPORTED naming only the missing one', async () => {
	const agentRun = await runPlan(['linux/ppc64le', 'linux/s390x'], () => plan([
		{kind: 'version', argv: sh('echo v1')},
		{kind: 'platforms', argv: sh('echo \'[{"platforms":[{"architecture":"amd64"},{"architecture":"ppc64le"}]}]\''), expect: [
			{platform: 'linux/ppc64le', text: '"architecture":"ppc64le"'}, {platform: 'linux/s390x', text: '"architecture":"s390x"'},
		]},
	]));
	assert.equal(agentRun.exitCode, 1);
	const error = terminalError(agentRun);
	assert.equal(error.code, 'E_PLATFORM_UNSUPPORTED');
	assert.match(error.message, /linux\/s390x/);
	assert.doesNotMatch(error.message, /ppc64le/);
	assert.deepEqual(ofType(agentRun.events, 'engine')[0]?.platforms, ['linux/ppc64le']);
});

test('a failing run step: its code, message and exit code; a mayFail step does not end the run', async () => {
	const agentRun = await runPlan(['linux/riscv64'], () => plan([
		run(sh('exit 5'), {mayFail: true, phase: 'base-images', platform: 'linux/riscv64', errorCode: 'E_BASE_IMAGE'}),
		run(sh('echo "error: failed to solve: process did not complete successfully" >&2; exit 3'), {platform: 'linux/riscv64', message: 'the build for linux/riscv64 failed'}),
	], 'buildah'));
	assert.equal(agentRun.exitCode, 1);
	const error = terminalError(agentRun);
	assert.deepEqual([error.code, error.message, error.platform], ['E_BUILD_FAILED', 'the build for linux/riscv64 failed (exit code 3)', 'linux/riscv64']);
	assert.ok(ofType(agentRun.events, 'log').some(event => event.source === 'engine' && event.line.includes('did not complete successfully')));
	assert.ok(ofType(agentRun.events, 'log').some(event => event.source === 'agent' && event.line.includes('exited with 5')));
	assert.deepEqual(phasesOf(agentRun.events), ['binfmt', 'base-images linux/riscv64', 'build linux/riscv64']);
});

test('a watched run step that prints nothing and uses no CPU: E_HANG naming the process; an unwatched one is left alone', async () => {
	// A ppc64le program that hangs under its emulator: the probe busybox sleeping.
	const busybox = path.join(probes, 'ppc64le', 'busybox');
	const hung = await runPlan(['linux/ppc64le'], () => plan([run([busybox, 'sleep', '30'], {watch: true, platform: 'linux/ppc64le'})]), {hangTimeoutSeconds: 2});
	assert.equal(hung.exitCode, 1);
	const error = terminalError(hung);
	assert.deepEqual([error.code, error.platform], ['E_HANG', 'linux/ppc64le']);
	assert.match(error.message, /no output and no CPU for 2s while building linux\/ppc64le: likely an emulator hang in ".*busybox sleep 30" \(pid \d+, under qemu-ppc64le(-static)?\)/);

	const unwatched = await runPlan(['linux/ppc64le'], dirs => plan([run(['sleep', '3']), copyLayout(dirs)]), {hangTimeoutSeconds: 1});
	assert.equal(unwatched.exitCode, 0, JSON.stringify(unwatched.events));
});

test('the plan\'s tmpfs mount points are tmpfs before the first step', async () => {
	const agentRun = await runPlan(['linux/amd64'], dirs => ({...plan([run(sh('grep " $1 " /proc/mounts', path.join(dirs.dir, 'containers'))), copyLayout(dirs)]), tmpfs: [path.join(dirs.dir, 'containers')]}));
	assert.equal(agentRun.exitCode, 0, JSON.stringify(agentRun.events));
	assert.match(ofType(agentRun.events, 'log').find(event => event.source === 'engine')?.line ?? '', /^exobuild-tmpfs \S+ tmpfs rw,nosuid,nodev/);
});

test('env= secrets on stdin land on a private tmpfs, once each, and stdin is closed; a malformed block is E_SECRETS', async () => {
	const dirs = newDirs();
	const secrets = path.join(dirs.dir, 'secrets');
	const values = ['s3cr3t', 'two\nlines ünï'];
	const args = agentArgs([parsePlatform('linux/amd64')], plan([
		run(sh('grep " $1 " /proc/mounts; stat -c %a "$1"; cat "$1/first"; echo; cat "$1/second"; echo; cat; echo "stdin ended"', secrets)),
		copyLayout(dirs),
	]), {hangTimeoutSeconds: 0, secretsFromStdin: 2, debug: false, stateDir: dirs.state, outputLayout: dirs.output, daemonLog: dirs.daemonLog});
	const block = `first\t${Buffer.from(values[0]!).toString('base64')}\nsecond\t${Buffer.from(values[1]!).toString('base64')}\nnot for the engine\n`;
	const events: AgentEvent[] = [];
	const exit = await runInNamespaces(['/bin/sh', '-c', 'mount -t proc proc /proc && exec env -i "$@"', 'sh', 'PATH=/usr/bin:/bin', `EXOBUILD_PROBE_DIR=${probes}`, `EXOBUILD_SECRETS_DIR=${secrets}`, agent, ...args], {
		stdin: block,
		onStdoutLine: text => events.push(parseAgentLine(text)),
	});
	assert.equal(exit.exitCode, 0, JSON.stringify(events));
	const lines = ofType(events, 'log').map(event => event.line);
	assert.match(lines[0]!, /^exobuild-secrets \S+ tmpfs rw,nosuid,nodev,noexec/);
	assert.deepEqual(lines.slice(1), ['700', 's3cr3t', 'two', 'lines ünï', 'stdin ended'], 'the engine does not see the rest of stdin');

	fs.rmSync(dirs.output, {recursive: true});
	const bad = await runInNamespaces(['/bin/sh', '-c', 'mount -t proc proc /proc && exec env -i "$@"', 'sh', 'PATH=/usr/bin:/bin', `EXOBUILD_PROBE_DIR=${probes}`, `EXOBUILD_SECRETS_DIR=${secrets}`, agent, ...args], {
		stdin: 'first without a tab\n',
		onStdoutLine: text => events.push(parseAgentLine(text)),
	});
	assert.equal(bad.exitCode, 1);
	assert.equal(ofType(events, 'error')[0]?.code, 'E_SECRETS');
});

test('a step whose program is not in the image: E_ENGINE_MISSING before anything starts', async () => {
	const agentRun = await runPlan(['linux/ppc64le'], () => plan([{kind: 'daemon', argv: ['buildkitd'], rootlessArgs: []}, run(['buildctl', 'build'])]));
	assert.equal(agentRun.exitCode, 1);
	const error = terminalError(agentRun);
	assert.equal(error.code, 'E_ENGINE_MISSING');
	assert.match(error.message, / buildctl buildkitd/);
	assert.equal(ofType(agentRun.events, 'handler').length, 0);
});

test('SIGTERM while the daemon starts: E_INTERRUPTED, the daemon got one SIGTERM, and no process of the agent is left', async () => {
	const marks = path.join(work, 'sigterm');
	fs.mkdirSync(marks);
	const started = runPlan(['linux/ppc64le'], () => plan([
		{kind: 'daemon', argv: ['buildkitd'], rootlessArgs: []},
		{kind: 'ready', argv: sh('exit 1'), timeoutMs: 60_000},
	]), {path: [failing('buildkit')], env: {FAILING_BUILDKITD_MODE: 'never-ready', FAILING_BUILDKITD_DIR: marks, MARK: marks}});
	const cmdlineOf = (pid: string): string => {
		try {
			return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
		} catch {
			return '';
		}
	};

	const marked = (): string[] => fs.readdirSync('/proc').filter(name => /^\d+$/.test(name)).filter(pid => {
		try {
			return fs.readFileSync(`/proc/${pid}/environ`, 'utf8').includes(`MARK=${marks}\0`);
		} catch {
			return false;
		}
	});

	let agentPid: number | undefined;
	for (let attempt = 0; attempt < 200 && agentPid === undefined; attempt++) {
		await new Promise(resolve => setTimeout(resolve, 50));
		if (!fs.existsSync(path.join(marks, 'started'))) {
			continue;
		}

		// The agent's own shell: not the namespace's init (`sh -c … exobuild-agent …`), and not one
		// of its forked children (they share its command line, and their parent is the agent).
		const found = marked().find(pid => {
			try {
				const cmdline = cmdlineOf(pid);
				const parent = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1] ?? '';
				return cmdline.includes('exobuild-agent') && !cmdline.startsWith('/bin/sh\0-c\0') && cmdlineOf(parent) !== cmdline;
			} catch {
				return false;
			}
		});
		agentPid = found === undefined ? undefined : Number(found);
	}

	assert.ok(agentPid, 'the agent is running');
	process.kill(agentPid, 'SIGTERM');
	const agentRun = await started;
	assert.equal(agentRun.exitCode, 1);
	assert.equal(terminalError(agentRun).code, 'E_INTERRUPTED');
	assert.equal(fs.readFileSync(path.join(marks, 'sigterms'), 'utf8'), 'TERM\n');
	assert.deepEqual(marked(), []);
});

test('prove: each platform on its own; a bogus handler fails with its own error event while the others are still proven', async () => {
	const s390x = parsePlatform('linux/s390x');
	// A mask shorter than its magic: the kernel refuses the registration (EINVAL).
	const bogus = `${s390x.id}=qemu-${s390x.arch.qemu}:${s390x.arch.magic}:\\xff\\xff:${s390x.arch.unameMachine}`;
	const dirs = newDirs();
	const agentRun = await runAgent(dirs, ['prove', '--engine', 'buildah', '--platform', s390x.id, '--handler', bogus, ...platformHandlerArgs(['linux/ppc64le', 'linux/amd64'].map(id => parsePlatform(id))), '--state-dir', dirs.state]);
	assert.equal(agentRun.exitCode, 1, agentRun.stderr.join('\n') + JSON.stringify(agentRun.events));
	assert.equal(ofType(agentRun.events, 'hello')[0]?.engine, 'buildah');
	const errors = ofType(agentRun.events, 'error');
	assert.deepEqual(errors.map(error => [error.platform, error.code]), [['linux/s390x', 'E_BINFMT_REGISTER']]);
	assert.match(errors[0]!.message, /registering qemu-s390x failed/);
	assert.deepEqual(ofType(agentRun.events, 'handler').map(h => [h.platform, h.mode, h.proof]), [['linux/ppc64le', 'emulated', 'ppc64le'], ['linux/amd64', 'native', 'x86_64']]);
	assert.equal(ofType(agentRun.events, 'result').length, 0, 'prove has no result event');
	assert.deepEqual(agentRun.events.flatMap(event => (event.event === 'phase-end' ? [[event.phase, event.ok]] : [])), [['binfmt', false]]);
});

test('prove: every handler proven → exit 0 and the binfmt phase ends ok', async () => {
	const agentRun = await runAgent(newDirs(), ['prove', '--engine', 'buildah', ...platformHandlerArgs(['linux/riscv64', 'linux/arm64'].map(id => parsePlatform(id)))]);
	assert.equal(agentRun.exitCode, 0, agentRun.stderr.join('\n') + JSON.stringify(agentRun.events));
	assert.deepEqual(ofType(agentRun.events, 'handler').map(h => [h.platform, h.mode, h.proof]), [['linux/riscv64', 'emulated', 'riscv64'], ['linux/arm64', 'emulated', 'aarch64']]);
	assert.equal(ofType(agentRun.events, 'error').length, 0);
	assert.equal(ofType(agentRun.events, 'phase-end')[0]?.ok, true);
});

test('real BuildKit: buildkitd rootless, two platforms in one buildctl build, a quiet clean stop, rawjson passed through byte for byte', {skip: upstreamSkip('buildkit')}, async () => {
	const binDir = await extractUpstream('buildkit', path.join(work, 'buildkit'));
	const context = path.join(work, 'bk-context');
	fs.mkdirSync(context, {recursive: true});
	fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM scratch\nCOPY hello.txt /\n');
	fs.writeFileSync(path.join(context, 'hello.txt'), 'hello from exobuild\n');
	let raw = '';
	const ids = ['linux/ppc64le', 'linux/s390x'];
	const agentRun = await runPlan(ids, dirs => {
		raw = path.join(dirs.dir, 'rawjson.txt');
		const addr = ['--addr', `unix://${dirs.state}/buildkitd.sock`];
		const build = (dest: string, progress: string): string[] => ['buildctl', ...addr, 'build', '--frontend', 'dockerfile.v0', '--local', `context=${context}`, '--local', `dockerfile=${context}`,
			'--opt', `platform=${ids.join(',')}`, '--output', `type=oci,tar=false,dest=${dest}`, '--progress', progress];
		return plan([
			{kind: 'daemon', argv: ['buildkitd', ...addr, '--root', `${dirs.state}/buildkit`, '--oci-worker=true', '--containerd-worker=false'], rootlessArgs: ['--rootless']},
			{kind: 'ready', argv: ['buildctl', ...addr, 'debug', 'workers'], timeoutMs: 60_000},
			{kind: 'version', argv: ['buildkitd', '--version']},
			{kind: 'platforms', argv: ['buildctl', ...addr, 'debug', 'workers', '--format', '{{json .}}'], expect: ids.map(id => ({platform: id, text: `"architecture":"${id.split('/')[1]!}"`}))},
			run(build(dirs.output, 'plain'), {watch: true}),
			// The same build again with --progress rawjson; tee keeps what buildctl printed.
			run(sh(`"$@" 2>&1 | tee '${raw}'`, ...build(`${dirs.state}/rawjson-layout`, 'rawjson'))),
		]);
	}, {path: [binDir, failing('runc')]});
	assert.equal(agentRun.exitCode, 0, agentRun.stderr.join('\n') + JSON.stringify(agentRun.events.slice(-20)) + fs.readFileSync(agentRun.daemonLog, 'utf8').slice(-2000));
	assert.match(ofType(agentRun.events, 'engine')[0]!.version, /github\.com\/moby\/buildkit v0\.32\.2/);
	assert.deepEqual(ofType(agentRun.events, 'engine')[0]!.platforms, ids);

	// The layout: an image index of the two platforms.
	const result = ofType(agentRun.events, 'result')[0]!;
	const index = JSON.parse(fs.readFileSync(path.join(agentRun.output, 'index.json'), 'utf8')) as {manifests: Array<{digest: string}>};
	assert.equal(result.digest, index.manifests[0]!.digest);
	const top = JSON.parse(fs.readFileSync(path.join(agentRun.output, 'blobs', 'sha256', result.digest.slice(7)), 'utf8')) as {manifests: Array<{platform: {architecture: string}}>};
	assert.deepEqual(top.manifests.map(manifest => manifest.platform.architecture).sort(), ['ppc64le', 's390x']);

	// The daemon's log is in its file, not in the events; its stop was the one clean SIGTERM.
	const daemonLog = fs.readFileSync(agentRun.daemonLog, 'utf8');
	assert.match(daemonLog, /running server on/);
	assert.match(daemonLog, /got SIGTERM\/SIGINT, forcing shutdown/, 'buildkitd prints this on any SIGTERM (util/appcontext)');
	assert.doesNotMatch(daemonLog, /got 2 SIGTERM/);
	assert.equal(ofType(agentRun.events, 'log').filter(event => event.source !== 'engine').length, 0);

	// Plain progress as the pipeline makes it (events, and the steps read from the engine's output): no daemon line, no line twice.
	const printed: string[] = [];
	const plain = new PlainReporter(line => printed.push(line.replace(/^#\s*\d+\.\d+s /, '')));
	const steps = new StepTracker();
	for (const event of agentRun.events.filter(event => !(event.event === 'log' && event.line.startsWith('{')))) {
		plain.report({kind: 'agent', event});
		for (const {step, state} of event.event === 'log' && event.source === 'engine' ? steps.onLine(event.platform, event.line) : []) {
			plain.report({kind: 'step', id: steps.steps.indexOf(step) + 1, name: step.name, state, cached: step.cached});
		}
	}

	assert.equal(printed.some(line => /level=|goroutine|forcing shutdown/.test(line)), false, printed.join('\n'));
	const stepLines = printed.filter(line => /^#\d+ /.test(line));
	assert.ok(stepLines.some(line => line.includes('COPY hello.txt')), printed.join('\n'));
	assert.deepEqual(stepLines, [...new Set(stepLines)], 'no step line twice');

	// rawjson: what the reporter writes is exactly what buildctl printed.
	let written = '';
	const rawjson = new RawJsonReporter(line => {
		written += `${line}\n`;
	});
	for (const event of agentRun.events) {
		rawjson.report({kind: 'agent', event});
	}

	// buildctl prints its own logrus warnings on the same stream; the SolveStatus lines are the JSON ones.
	const printedByBuildctl = fs.readFileSync(raw, 'utf8').split('\n').filter(Boolean);
	assert.deepEqual(printedByBuildctl.filter(line => !line.startsWith('{')).map(line => /level=(\w+)/.exec(line)?.[1]), printedByBuildctl.filter(line => !line.startsWith('{')).map(() => 'warning'));
	const expected = printedByBuildctl.filter(line => line.startsWith('{"')).map(line => `${line}\n`).join('');
	assert.ok(expected.length > 1000, 'buildctl printed SolveStatus JSON');
	assert.equal(Buffer.compare(Buffer.from(written), Buffer.from(expected)), 0);
});

test('query (exobuild node): each command\'s exit code and output, words intact, up to the first that fails (124 on timeout, 127 when absent); bad grammar is E_AGENT_USAGE', async () => {
	// `hello` names the image's engine: stand-ins that only need to be there.
	const engineDir = path.join(work, 'query-engine');
	fs.mkdirSync(engineDir, {recursive: true});
	for (const name of ['buildkitd', 'buildctl']) {
		fs.writeFileSync(path.join(engineDir, name), '#!/bin/sh\nexit 0\n', {mode: 0o755});
	}

	const agentRun = await runAgent(newDirs(), [
		'query', '--timeout', '1',
		'3', 'printf', '%s|%s', 'a "quoted" $(word)\\',
		'5', '/bin/sh', '-c', 'echo out; echo err >&2', 'sh', 'unused',
		'2', 'sleep', '5',
		'1', 'true',
	], {path: [engineDir]});
	assert.equal(agentRun.exitCode, 0, agentRun.stderr.join('\n'));
	assert.deepEqual(agentRun.events.map(event => event.event), ['hello', 'query', 'query', 'query']);
	assert.deepEqual(ofType(agentRun.events, 'query').map(({index, exitCode, output}) => ({index, exitCode, output})), [
		{index: 0, exitCode: 0, output: 'a "quoted" $(word)\\|'},
		{index: 1, exitCode: 0, output: 'out\nerr'},
		{index: 2, exitCode: 124, output: ''},
	], 'the timed-out query ends the run: the last one is never run');
	for (const [argv, exitCode, output] of [[['no-such-program'], 127, 'no-such-program: not found in the builder image'], [['/bin/sh', '-c', 'echo failed; exit 3'], 3, 'failed']] as const) {
		const failed = await runAgent(newDirs(), ['query', '--timeout', '5', String(argv.length), ...argv, '1', 'true'], {path: [engineDir]});
		assert.equal(failed.exitCode, 0);
		assert.deepEqual(ofType(failed.events, 'query').map(({index, exitCode: code, output: text}) => ({index, exitCode: code, output: text})), [{index: 0, exitCode, output}]);
	}

	for (const args of [['query'], ['query', '--timeout', '0', '1', 'true'], ['query', '--timeout', '5'], ['query', '--timeout', '5', '2', 'true'], ['query', '--timeout', '5', 'x', 'true']]) {
		const bad = await runAgent(newDirs(), args, {path: [engineDir]});
		assert.equal(bad.exitCode, 2, args.join(' '));
		assert.equal(terminalError(bad).code, 'E_AGENT_USAGE');
	}
});
