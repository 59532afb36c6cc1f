/**
 * Agent-level tests: the real vm-image/exobuild-agent on this host, in a private user namespace
 * (full id map, own pid and mount namespaces, so its binfmt_misc is its own), with the host's
 * static QEMU emulators and real probe binaries of each architecture. The BuildKit path runs up
 * to the engine binaries, which are stand-ins here (test/fixtures/fake-buildkit): buildkitd and
 * buildctl cannot be installed on this machine.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {parseAgentLine, type AgentEvent} from '../../src/agent/contract.js';
import {handlerSpec, parsePlatform} from '../../src/platforms/parse.js';
import {runInNamespaces} from '../../src/sandboxes/linux-userns/namespaces.js';
import {busyboxOf} from '../fixtures/base-images.js';
import {fixturesDir, hostBinfmtSnapshot, repoRoot} from '../e2e/helpers.js';

const agent = path.join(repoRoot, 'vm-image', 'exobuild-agent');
const fakes = path.join(repoRoot, 'test', 'fixtures', 'fake-buildkit');
const fakeBinfmt = path.join(repoRoot, 'test', 'fixtures', 'fake-binfmt');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-agent-'));
const probes = path.join(work, 'probes');
let binfmtBefore: string;

before(async () => {
	binfmtBefore = hostBinfmtSnapshot();
	for (const id of ['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/amd64', 'linux/arm64']) {
		const platform = parsePlatform(id);
		fs.mkdirSync(path.join(probes, platform.arch.qemu), {recursive: true});
		fs.copyFileSync(await busyboxOf(path.join(fixturesDir, 'busybox'), platform), path.join(probes, platform.arch.qemu, 'busybox'));
	}

});
after(() => {
	fs.rmSync(work, {recursive: true, force: true});
	assert.equal(hostBinfmtSnapshot(), binfmtBefore, 'the host binfmt_misc is unchanged');
});

interface AgentRun {
	exitCode: number | undefined;
	events: AgentEvent[];
	stderr: string[];
	fakeDir: string;
	state: string;
	output: string;
}

let runCount = 0;
const handlerArgs = (ids: readonly string[]): string[] => ids.flatMap(id => {
	const platform = parsePlatform(id);
	return ['--platform', platform.id, '--handler', `${platform.id}=${handlerSpec(platform.arch)}:${platform.arch.unameMachine}`];
});

/** Runs the agent in a private user namespace with a fresh /proc; every stdout line must be on contract. */
const runAgent = async (args: readonly string[], env: Record<string, string> = {}, options: {withFakes?: boolean; withBinfmt?: boolean; signal?: AbortSignal} = {}): Promise<AgentRun> => {
	const dir = path.join(work, `run-${++runCount}`);
	const fakeDir = path.join(dir, 'fake');
	const state = path.join(dir, 'state');
	const context = path.join(dir, 'context');
	fs.mkdirSync(fakeDir, {recursive: true});
	fs.mkdirSync(context, {recursive: true});
	fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM busybox\nRUN true\n');
	const environment = {
		PATH: `${options.withBinfmt ? `${fakeBinfmt}:` : ''}${options.withFakes === false ? '' : `${fakes}:`}/usr/sbin:/usr/bin:/sbin:/bin`,
		EXOBUILD_PROBE_DIR: probes,
		EXOBUILD_BUILDKIT_ADDR: `unix://${dir}/buildkitd.sock`,
		FAKE_BUILDKIT_DIR: fakeDir,
		...env,
	};
	const events: AgentEvent[] = [];
	const stderr: string[] = [];
	const output = path.join(dir, 'layout');
	const resolvedArgs = args.map(arg => arg.replaceAll('@CONTEXT@', context).replaceAll('@STATE@', state).replaceAll('@OUTPUT@', output));
	const exit = await runInNamespaces([
		'/bin/sh', '-c', 'mount -t proc proc /proc && exec env -i "$@"', 'sh',
		...Object.entries(environment).map(([key, value]) => `${key}=${value}`),
		agent, ...resolvedArgs,
	], {
		onStdoutLine(line) {
			events.push(parseAgentLine(line));
		},
		onStderrLine(line) {
			stderr.push(line);
		},
		...(options.signal === undefined ? {} : {signal: options.signal}),
	});
	return {exitCode: exit.exitCode, events, stderr, fakeDir, state, output};
};

const buildArgs = (ids: readonly string[], extra: readonly string[] = []): string[] => [
	'build', ...handlerArgs(ids), '--context', '@CONTEXT@', '--dockerfile', '@CONTEXT@/Dockerfile', '--output', '@OUTPUT@', '--state-dir', '@STATE@', ...extra,
];

const ofType = <E extends AgentEvent['event']>(events: readonly AgentEvent[], type: E): Array<Extract<AgentEvent, {event: E}>> =>
	events.filter((event): event is Extract<AgentEvent, {event: E}> => event.event === type);

const terminalError = (run: AgentRun) => {
	const errors = ofType(run.events, 'error');
	assert.equal(errors.length, 1, JSON.stringify(run.events));
	return errors[0]!;
};

test('bad arguments: exit 2 with E_AGENT_USAGE', async () => {
	for (const args of [[], ['frobnicate'], ['build'], ['build', '--platform', 'linux/ppc64le'], ['build', '--engine', 'docker', ...handlerArgs(['linux/ppc64le'])], ['build', '--bogus', 'x']]) {
		// eslint-disable-next-line no-await-in-loop
		const run = await runAgent(args);
		assert.equal(run.exitCode, 2, args.join(' '));
		assert.equal(terminalError(run).code, 'E_AGENT_USAGE');
	}
});

test('handlers are registered in the private binfmt_misc with FPC, proven, and reported; native needs none', async () => {
	const ids = ['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/amd64'];
	const run = await runAgent(buildArgs(ids, ['--build-arg', 'MSG=two words "and quotes"', '--build-arg', "Q=it's", '--target', 'final', '--no-cache',
		'--base', `busybox=/layouts/bb@sha256:${'c'.repeat(64)}`, '--base', `debian:stable=/layouts/deb@sha256:${'d'.repeat(64)}`]));
	assert.equal(run.exitCode, 0, run.stderr.join('\n') + JSON.stringify(run.events));
	const handlers = ofType(run.events, 'handler');
	assert.deepEqual(handlers.map(h => [h.platform, h.mode]), [['linux/ppc64le', 'emulated'], ['linux/s390x', 'emulated'], ['linux/riscv64', 'emulated'], ['linux/amd64', 'native']]);
	for (const handler of handlers.filter(h => h.mode === 'emulated')) {
		const arch = handler.platform.split('/')[1];
		assert.equal(handler.handler, `qemu-${arch}`);
		assert.equal(handler.registeredBy, 'agent');
		assert.match(handler.emulator ?? '', new RegExp(`/qemu-${arch}(-static)?$`));
		assert.match(handler.emulatorVersion ?? '', /^qemu-\S+ version \d+\./);
		assert.equal([...(handler.flags ?? '')].sort().join(''), 'CFOP');
		assert.equal(handler.proof, arch);
	}

	assert.equal(handlers.find(h => h.platform === 'linux/amd64')?.proof, 'x86_64');

	// The BuildKit path, up to the engine binaries.
	const hello = ofType(run.events, 'hello')[0]!;
	assert.equal(hello.engine, 'buildkit');
	const daemonArgs = fs.readFileSync(path.join(run.fakeDir, 'buildkitd.argv'), 'utf8').split('\n');
	assert.ok(daemonArgs.includes('--rootless'), 'rootless inside a user namespace');
	assert.ok(daemonArgs.includes('--oci-worker=true') && daemonArgs.includes('--containerd-worker=false'));
	assert.equal(daemonArgs[daemonArgs.indexOf('--root') + 1], path.join(run.state, 'buildkit'));
	assert.ok(fs.readFileSync(path.join(run.fakeDir, 'polls'), 'utf8').split('\n').length > 2, 'readiness was polled until the daemon answered');
	const buildArgv = fs.readFileSync(path.join(run.fakeDir, 'buildctl.argv'), 'utf8').trimEnd().split('\n');
	const pairs = (flag: string): string[] => buildArgv.flatMap((arg, index) => (arg === flag ? [buildArgv[index + 1]!] : []));
	assert.deepEqual(pairs('--opt'), [
		'filename=Dockerfile', 'platform=linux/ppc64le,linux/s390x,linux/riscv64,linux/amd64', 'target=final',
		'build-arg:MSG=two words "and quotes"', "build-arg:Q=it's",
		`context:busybox=oci-layout://base0@sha256:${'c'.repeat(64)}`, `context:debian:stable=oci-layout://base1@sha256:${'d'.repeat(64)}`,
	]);
	assert.deepEqual(pairs('--oci-layout'), ['base0=/layouts/bb', 'base1=/layouts/deb']);
	assert.deepEqual(pairs('--local').map(value => value.split('=')[0]), ['context', 'dockerfile']);
	assert.ok(buildArgv.includes('--no-cache'));
	assert.equal(pairs('--output')[0], `type=oci,tar=false,dest=${run.output}`);
	assert.equal(buildArgv[0], 'build');
	assert.equal(pairs('--frontend')[0], 'dockerfile.v0');

	// Awkward engine output arrives intact.
	const lines = ofType(run.events, 'log').map(event => event.line);
	assert.ok(lines.includes('#2 RUN echo "quoted" \\ back\tslash [1mbold[0m'), lines.join('\n'));
	assert.ok(lines.includes('tail without newline'));

	const result = ofType(run.events, 'result')[0]!;
	assert.equal(result.engine, 'buildkit');
	const index = JSON.parse(fs.readFileSync(path.join(run.output, 'index.json'), 'utf8')) as {manifests: Array<{digest: string}>};
	assert.equal(result.digest, index.manifests[0]!.digest);
	assert.deepEqual(result.platforms, ids);
	// Phases come in order and each start has its end.
	const phases = run.events.filter(event => event.event === 'phase-start' || event.event === 'phase-end').map(event => `${event.event}:${'phase' in event ? event.phase : ''}`);
	assert.deepEqual(phases, ['binfmt', 'engine-start', 'platform-check', 'build', 'export'].flatMap(phase => [`phase-start:${phase}`, `phase-end:${phase}`]));
});

test('a handler whose probe does not print the expected architecture fails its proof', async () => {
	const platform = parsePlatform('linux/ppc64le');
	// The handler is registered for real, but the proof expects s390x: it must not pass.
	const spec = `${platform.id}=${handlerSpec(platform.arch)}:s390x`;
	const run = await runAgent(['build', '--platform', platform.id, '--handler', spec, '--context', '@CONTEXT@', '--dockerfile', '@CONTEXT@/Dockerfile', '--output', '@OUTPUT@', '--state-dir', '@STATE@']);
	assert.equal(run.exitCode, 1);
	const error = terminalError(run);
	assert.equal(error.code, 'E_HANDLER_PROOF');
	assert.equal(error.platform, 'linux/ppc64le');
	assert.match(error.message, /printed "ppc64le", expected "s390x"/);
});

test('a platform without a probe in the image: E_HANDLER_PROOF naming the missing file', async () => {
	const run = await runAgent(buildArgs(['linux/arm/v7']));
	assert.equal(run.exitCode, 1);
	assert.match(terminalError(run).message, /no probe binary for arm/);
});

test('with tonistiigi binfmt in the image, it registers the handler and its JSON is what counts', async () => {
	const run = await runAgent(buildArgs(['linux/s390x']), {}, {withBinfmt: true});
	assert.equal(run.exitCode, 0, JSON.stringify(run.events));
	const [handler] = ofType(run.events, 'handler');
	assert.equal(handler?.registeredBy, 'binfmt');
	assert.equal(handler?.proof, 's390x');
	assert.equal([...(handler?.flags ?? '')].sort().join(''), 'CFOP', 'P comes from QEMU_PRESERVE_ARGV0');

	const failed = await runAgent(buildArgs(['linux/s390x']), {FAKE_BINFMT_MODE: 'silent-failure'}, {withBinfmt: true});
	assert.equal(failed.exitCode, 1, 'binfmt exited 0, but its JSON lacks qemu-s390x');
	const error = terminalError(failed);
	assert.equal(error.code, 'E_BINFMT_REGISTER');
	assert.match(error.message, /did not list qemu-s390x/);
});

test('buildkitd that crashes at start: E_ENGINE_START with its output in the log', async () => {
	const run = await runAgent(buildArgs(['linux/ppc64le']), {FAKE_BUILDKITD_MODE: 'crash'});
	assert.equal(run.exitCode, 1);
	assert.equal(terminalError(run).code, 'E_ENGINE_START');
	assert.ok(ofType(run.events, 'log').some(event => event.line.includes('failed to create worker')));
});

test('buildkitd that never answers: E_ENGINE_START after the readiness timeout', async () => {
	const run = await runAgent(buildArgs(['linux/ppc64le']), {FAKE_BUILDKITD_MODE: 'never-ready', EXOBUILD_BUILDKIT_READY_TIMEOUT_MS: '1500'});
	assert.equal(run.exitCode, 1);
	assert.match(terminalError(run).message, /did not answer within 1500 ms/);
});

test('a platform the engine does not list: E_PLATFORM_UNSUPPORTED naming it', async () => {
	const run = await runAgent(buildArgs(['linux/ppc64le', 'linux/s390x']), {FAKE_BUILDKIT_PLATFORMS: 'amd64 ppc64le'});
	assert.equal(run.exitCode, 1);
	const error = terminalError(run);
	assert.equal(error.code, 'E_PLATFORM_UNSUPPORTED');
	assert.match(error.message, /linux\/s390x/);
	assert.doesNotMatch(error.message, /ppc64le/);
});

test('a failing build: E_BUILD_FAILED, the engine error in the log', async () => {
	const run = await runAgent(buildArgs(['linux/riscv64']), {FAKE_BUILDCTL_BUILD_EXIT: '1'});
	assert.equal(run.exitCode, 1);
	assert.equal(terminalError(run).code, 'E_BUILD_FAILED');
	assert.ok(ofType(run.events, 'log').some(event => event.line.includes('did not complete successfully')));
});

test('--engine buildkit where the image has no buildkitd: E_ENGINE_MISSING', async () => {
	const run = await runAgent(buildArgs(['linux/ppc64le'], ['--engine', 'buildkit']), {}, {withFakes: false});
	assert.equal(run.exitCode, 1);
	assert.equal(terminalError(run).code, 'E_ENGINE_MISSING');
});

test('SIGTERM during the engine start: E_INTERRUPTED, and no process of the agent is left', async () => {
	const dir = path.join(work, 'sigterm');
	fs.mkdirSync(dir);
	const controller = new AbortController();
	const started = runAgent(buildArgs(['linux/ppc64le']), {FAKE_BUILDKITD_MODE: 'never-ready', EXOBUILD_BUILDKIT_READY_TIMEOUT_MS: '60000', FAKE_MARK: dir});
	// Find the agent's shell and send it SIGTERM once buildkitd is up.
	let agentPid: number | undefined;
	for (let attempt = 0; attempt < 200 && agentPid === undefined; attempt++) {
		// eslint-disable-next-line no-await-in-loop
		await new Promise(resolve => setTimeout(resolve, 50));
		// The agent's own shell: not the namespace's init (`sh -c … exobuild-agent …`), and not one
		// of its forked children (they share its command line, and their parent is the agent).
		const cmdlineOf = (pid: string): string => {
			try {
				return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
			} catch {
				return '';
			}
		};

		const found = fs.readdirSync('/proc').filter(name => /^\d+$/.test(name)).find(pid => {
			try {
				const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
				const cmdline = cmdlineOf(pid);
				const parent = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1] ?? '';
				return environ.includes(`FAKE_MARK=${dir}`) && cmdline.includes('exobuild-agent') && !cmdline.includes('\0-c\0')
					&& cmdlineOf(parent) !== cmdline && fs.existsSync(path.join(work, `run-${runCount}`, 'fake', 'buildkitd.argv'));
			} catch {
				return false;
			}
		});
		agentPid = found === undefined ? undefined : Number(found);
	}

	assert.ok(agentPid, 'the agent is running');
	process.kill(agentPid, 'SIGTERM');
	const run = await started;
	controller.abort();
	assert.equal(run.exitCode, 1);
	assert.equal(terminalError(run).code, 'E_INTERRUPTED');
	const left = fs.readdirSync('/proc').filter(name => /^\d+$/.test(name)).filter(pid => {
		try {
			return fs.readFileSync(`/proc/${pid}/environ`, 'utf8').includes(`FAKE_MARK=${dir}`);
		} catch {
			return false;
		}
	});
	assert.deepEqual(left, []);
});

test('prove: each platform on its own; a bogus handler fails with its own error event while the others are still proven', async () => {
	const ppc = parsePlatform('linux/ppc64le');
	const s390x = parsePlatform('linux/s390x');
	// A mask shorter than its magic: the kernel refuses the registration (EINVAL).
	const bogus = `${s390x.id}=qemu-${s390x.arch.qemu}:${s390x.arch.magic}:\\xff\\xff:${s390x.arch.unameMachine}`;
	const run = await runAgent([
		'prove', '--platform', s390x.id, '--handler', bogus, ...handlerArgs(['linux/ppc64le', 'linux/amd64']), '--state-dir', '@STATE@',
	]);
	assert.equal(run.exitCode, 1, run.stderr.join('\n') + JSON.stringify(run.events));
	assert.equal(ofType(run.events, 'hello').length, 1);
	const errors = ofType(run.events, 'error');
	assert.deepEqual(errors.map(error => [error.platform, error.code]), [['linux/s390x', 'E_BINFMT_REGISTER']]);
	assert.match(errors[0]!.message, /registering qemu-s390x failed/);
	const handlers = ofType(run.events, 'handler');
	assert.deepEqual(handlers.map(h => [h.platform, h.mode, h.proof]), [['linux/ppc64le', 'emulated', 'ppc64le'], ['linux/amd64', 'native', 'x86_64']]);
	assert.equal(handlers[0]!.handler, `qemu-${ppc.arch.qemu}`);
	assert.match(handlers[0]!.emulatorVersion ?? '', /^qemu-\S+ version \d+\./);
	assert.equal(ofType(run.events, 'result').length, 0, 'prove has no result event');
	const phases = run.events.filter(event => event.event === 'phase-start' || event.event === 'phase-end');
	assert.deepEqual(phases.map(event => [event.event, event.phase, event.event === 'phase-end' ? event.ok : undefined]), [['phase-start', 'binfmt', undefined], ['phase-end', 'binfmt', false]]);
	assert.equal(fs.existsSync(path.join(run.fakeDir, 'buildkitd.argv')), false, 'no engine was started');
});

test('prove: every handler proven → exit 0 and the binfmt phase ends ok; build-only options are refused', async () => {
	const run = await runAgent(['prove', ...handlerArgs(['linux/riscv64', 'linux/arm64'])]);
	assert.equal(run.exitCode, 0, run.stderr.join('\n') + JSON.stringify(run.events));
	assert.deepEqual(ofType(run.events, 'handler').map(h => [h.platform, h.mode, h.proof]), [['linux/riscv64', 'emulated', 'riscv64'], ['linux/arm64', 'emulated', 'aarch64']]);
	assert.equal(ofType(run.events, 'error').length, 0);
	assert.equal(ofType(run.events, 'phase-end')[0]?.ok, true);

	for (const args of [['prove'], ['prove', ...handlerArgs(['linux/ppc64le']), '--context', '@CONTEXT@'], ['prove', ...handlerArgs(['linux/ppc64le']), '--no-cache'], ['prove', '--platform', 'linux/ppc64le']]) {
		// eslint-disable-next-line no-await-in-loop
		const refused = await runAgent(args);
		assert.equal(refused.exitCode, 2, args.join(' '));
		assert.equal(terminalError(refused).code, 'E_AGENT_USAGE');
	}
});
