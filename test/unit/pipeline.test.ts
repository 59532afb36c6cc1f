/**
 * The build pipeline (src/pipeline) with an in-memory driver that replays recorded agent runs
 * (test/fixtures/replay-driver.ts) and a fake builder store: no sandbox, no engine. What is
 * asserted is observable: the archive written and its digest, the reported phases and their
 * order, the sandbox stops recorded, error codes and exit codes, the files left (or not) on disk.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {after, test} from 'node:test';
import * as tar from 'tar';
import {execa} from 'execa';
import {agentArgs, buildMounts, sandboxLayout, sandboxPaths} from '../../src/agent/agent-args.js';
import {engines} from '../../src/engines/index.js';
import {parseAgentLine} from '../../src/agent/contract.js';
import type {BuilderImage} from '../../src/builder-image/index.js';
import {toBuildRequest, type RawBuildOptions} from '../../src/cli/build-flags/options.js';
import {errorTable, interruptedBy, isUserError, UserError} from '../../src/errors.js';
import {inspectArchive, LayoutWriter, mediaTypes, type Descriptor} from '../../src/oci/index.js';
import {cacheDir, runsDir} from '../../src/paths.js';
import {bootSandbox} from '../../src/pipeline/boot.js';
import {deliverOutputs, readExportedImage, resultMetadata, writeResultFiles} from '../../src/pipeline/deliver-outputs.js';
import {hostPhases} from '../../src/pipeline/host-phases.js';
import {resultOf, runAgentStage} from '../../src/pipeline/run-agent-stage.js';
import {decideEngine, runBuild, type BuilderStore, type BuildResult} from '../../src/pipeline/run-build.js';
import {resolveInputs, stageInputs} from '../../src/pipeline/stage-inputs.js';
import {tearDown, tearDownRemaining} from '../../src/pipeline/teardown.js';
import type {BuildReporter, ProgressEvent} from '../../src/progress/events.js';
import type {BuildRequest} from '../../src/request/build-request.js';
import {cacheKeyOf, createStateVolumes, stateVolumeName} from '../../src/sandboxes/apple-container/state-volumes.js';
import type {Sandbox, SandboxDriver} from '../../src/sandboxes/driver.js';
import {
	agentPrelude, buildFailedScript, crashScript, createReplayDriver, holdScript, protocolErrorScript, successScript, writeSmallLayout, type ReplayRecord, type ReplayScript,
} from '../fixtures/replay-driver.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-pipeline-'));
process.env['EXOBUILD_CACHE_DIR'] = path.join(root, 'cache');
after(() => fs.rmSync(root, {recursive: true, force: true}));

const context = path.join(root, 'ctx');
fs.mkdirSync(context);
fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM busybox\nRUN echo hi > /hi\n');

let outputs = 0;
const newDest = (): string => path.join(root, `out-${outputs++}.tar`);

const request = (raw: Partial<RawBuildOptions> = {}, env: NodeJS.ProcessEnv = {}): BuildRequest => toBuildRequest(context, {
	platform: ['linux/ppc64le'], tag: [], buildArg: [], cache: true, buildContext: [], output: [], progress: 'plain', engine: 'auto', driver: 'linux-userns', ...raw,
}, {cwd: root, env, warn() {}});

const recordingReporter = (onEvent?: (event: ProgressEvent) => void): BuildReporter & {events: ProgressEvent[]} => {
	const events: ProgressEvent[] = [];
	return {
		events,
		report(event) {
			events.push(event);
			onEvent?.(event);
		},
		async finish() {},
	};
};

const builderRecord = (kind: BuilderImage['kind'] = 'distro'): BuilderImage => ({
	archivePath: path.join(root, 'no-builder.tar'), manifestDigest: `sha256:${'b'.repeat(64)}`, inputHash: 'c'.repeat(64), architecture: 'amd64', kind, reference: `exobuild-builder:${kind}-cccccccccccc`,
});

/** A builder store holding one record (or none, until `ensure` makes it); records the calls. */
const fakeBuilderStore = (stored: BuilderImage | undefined, made: BuilderImage = builderRecord()): BuilderStore & {ensured: number} => {
	const store = {
		ensured: 0,
		async find() {
			return stored;
		},
		async ensure() {
			store.ensured++;
			return made;
		},
	};
	return store;
};

/** Host folders of running builds (their scratch) left in the runs folder. */
const scratchLeft = (): string[] => (fs.existsSync(runsDir()) ? fs.readdirSync(runsDir()).filter(name => name.endsWith('.host')) : []);

const hostPhaseStarts = (events: readonly ProgressEvent[]): string[] =>
	events.flatMap(event => (event.kind === 'host-phase' && event.state === 'start' && event.detail === undefined ? [event.phase] : []));
const agentPhaseStarts = (events: readonly ProgressEvent[]): string[] =>
	events.flatMap(event => (event.kind === 'agent' && event.event.event === 'phase-start' ? [event.event.phase] : []));

const build = async (script: ReplayScript, options: {request?: BuildRequest; signal?: AbortSignal; onEvent?: (event: ProgressEvent) => void; store?: BuilderStore; startError?: Error; engineState?: SandboxDriver['engineState']} = {}): Promise<{result: BuildResult | undefined; error: unknown; record: ReplayRecord; events: ProgressEvent[]}> => {
	const replay = createReplayDriver({script, ...(options.startError === undefined ? {} : {startError: options.startError})});
	const {record} = replay;
	const driver: SandboxDriver = options.engineState === undefined ? replay.driver : {...replay.driver, engineState: options.engineState};
	const reporter = recordingReporter(options.onEvent);
	const run = runBuild(options.request ?? request(), {
		driver, builders: options.store ?? fakeBuilderStore(builderRecord()), reporter, ...(options.signal === undefined ? {} : {signal: options.signal}),
	});
	const outcome: {result?: BuildResult; error?: unknown} = await run.then(result => ({result}), (error: unknown) => ({error}));
	return {result: outcome.result, error: outcome.error, record, events: reporter.events};
};

const userError = (value: unknown): UserError => {
	assert.ok(isUserError(value), `expected a UserError, got ${String(value)}`);
	return value;
};

test('every recorded agent line of the fixtures is an event of the contract', () => {
	const lines = [
		...agentPrelude(['linux/ppc64le', 'linux/s390x'], 'buildkit'),
		...(successScript(['linux/ppc64le']).stdout as (exported: unknown) => string[])({top: {digest: `sha256:${'a'.repeat(64)}`}}),
		...buildFailedScript('linux/ppc64le').stdout as string[],
		...crashScript('linux/ppc64le').stdout as string[],
		...holdScript('linux/ppc64le').stdout as string[],
	];
	for (const line of lines) {
		assert.doesNotThrow(() => parseAgentLine(line), line);
	}

	const offContract = (protocolErrorScript('linux/ppc64le').stdout as string[]).filter(line => {
		try {
			parseAgentLine(line);
			return false;
		} catch {
			return true;
		}
	});
	assert.deepEqual(offContract, ['Trying to pull docker.io/library/busybox:latest...']);
});

test('a successful build writes the archive of the exported layout, reports the phases in order and tears down once', async () => {
	const dest = newDest();
	const {result, error, record, events} = await build(successScript(['linux/ppc64le', 'linux/s390x']), {request: request({platform: ['linux/ppc64le,linux/s390x'], output: [`type=oci,dest=${dest}`], tag: ['demo:1']})});
	assert.equal(error, undefined);
	const built = result!;
	const archive = await inspectArchive(dest);
	assert.equal(archive.kind, 'index');
	assert.equal(archive.topDigest, built.digest);
	assert.equal(built.descriptor.digest, built.digest);
	assert.deepEqual(archive.images.map(image => image.platform).sort(), ['linux/ppc64le', 'linux/s390x']);
	assert.equal((await archive.images.find(image => image.platform === 'linux/s390x')!.readFile('hello'))?.toString(), 'hello from linux/s390x\n');
	assert.deepEqual(archive.tags, ['docker.io/library/demo:1']);

	assert.deepEqual(hostPhaseStarts(events), ['reap-orphans', 'builder-image', 'sandbox-start', 'teardown', 'archive']);
	assert.deepEqual(agentPhaseStarts(events), ['binfmt', 'engine-start', 'platform-check', 'base-images', 'build', 'build', 'export']);
	const order = events.flatMap(event => (event.kind === 'host-phase' && event.state === 'start' && event.detail === undefined ? [event.phase] : (event.kind === 'agent' && event.event.event === 'result' ? ['result'] : [])));
	assert.deepEqual(order.slice(2), ['sandbox-start', 'result', 'teardown', 'archive']);
	assert.equal(record.stops.length, 1);
	assert.equal(record.reaps, 1);
	assert.deepEqual(built.platforms, ['linux/ppc64le', 'linux/s390x']);
	assert.deepEqual(built.handlers.map(handler => handler.platform), ['linux/ppc64le', 'linux/s390x']);
	assert.deepEqual(built.steps.map(step => [step.name, step.cached]), [
		['[linux/ppc64le 1/2] FROM busybox', false], ['[linux/ppc64le 2/2] RUN echo hi > /hi', true],
		['[linux/s390x 1/2] FROM busybox', false], ['[linux/s390x 2/2] RUN echo hi > /hi', true],
	]);
	assert.equal(built.phaseMs['build'], 500);
	assert.equal(built.phaseMs['binfmt'], 41);
	assert.ok(built.phaseMs['archive'] !== undefined);
	assert.equal(record.starts.length, 1);
	const outMount = record.starts[0]!.mounts.find(mount => mount.sandboxPath === sandboxPaths.out)!;
	assert.equal(outMount.readOnly, false);
	assert.equal(fs.existsSync(outMount.hostPath), false, 'the scratch folder is removed after the build');
	assert.deepEqual(scratchLeft(), []);
	assert.deepEqual(record.runs[0]!.args.slice(0, 3), ['build', '--engine', 'buildah'], 'the engine is decided on the host: a distro builder without BuildKit builds with buildah');
	assert.ok(record.runs[0]!.args.includes(`${sandboxPaths.out}/oci-layout`));
});

test('an agent error event fails the build with its code and exit code, tears down, writes nothing and removes the scratch', async () => {
	const dest = newDest();
	const {error, record} = await build(buildFailedScript('linux/ppc64le'), {request: request({output: [`type=oci,dest=${dest}`]})});
	const failure = userError(error);
	assert.equal(failure.code, 'E_BUILD_FAILED');
	assert.equal(failure.exitCode, errorTable.E_BUILD_FAILED.exitCode);
	assert.equal(failure.message, 'linux/ppc64le: the build failed (buildah exit code 3)');
	assert.equal(record.stops.length, 1);
	assert.equal(fs.existsSync(dest), false);
	assert.deepEqual(fs.readdirSync(root).filter(name => name.startsWith(path.basename(dest))), [], 'no partial output either');
	assert.deepEqual(scratchLeft(), []);
});

test('an existing output file is untouched when the build fails', async () => {
	const dest = newDest();
	fs.writeFileSync(dest, 'the previous image\n');
	const {error, record} = await build(buildFailedScript('linux/ppc64le'), {request: request({output: [`type=oci,dest=${dest}`]})});
	assert.equal(userError(error).code, 'E_BUILD_FAILED');
	assert.equal(fs.readFileSync(dest, 'utf8'), 'the previous image\n');
	assert.equal(record.stops.length, 1);
});

test('a line off the contract is a protocol error (exit 1) naming the line', async () => {
	const {error, record} = await build(protocolErrorScript('linux/ppc64le'));
	const failure = userError(error);
	assert.equal(failure.code, 'E_PROTOCOL');
	assert.equal(failure.exitCode, 1);
	assert.match(failure.message, /the agent broke the event contract: agent printed a line that is not JSON: "Trying to pull/);
	assert.equal(record.stops.length, 1);
	assert.deepEqual(scratchLeft(), []);
});

test('an agent that dies without a terminal event is a crash naming its exit code and last stderr line', async () => {
	const {error, record} = await build(crashScript('linux/ppc64le'));
	const failure = userError(error);
	assert.equal(failure.code, 'E_AGENT_CRASHED');
	assert.equal(failure.exitCode, errorTable.E_AGENT_CRASHED.exitCode);
	assert.equal(failure.message, 'the agent ended without a result (exit code 137): exobuild-agent: line 412: 77 Killed                  buildah build');
	assert.equal(record.stops.length, 1);
});

test('a stop signal during the agent run ends the build with its reason (exit 130), tears down and removes the scratch', async () => {
	const dest = newDest();
	const controller = new AbortController();
	const {error, record, events} = await build(holdScript('linux/ppc64le'), {
		request: request({output: [`type=oci,dest=${dest}`]}),
		signal: controller.signal,
		onEvent(event) {
			if (event.kind === 'agent' && event.event.event === 'phase-start' && event.event.phase === 'build') {
				controller.abort(interruptedBy('SIGINT', 'build'));
			}
		},
	});
	const failure = userError(error);
	assert.equal(failure.code, 'E_INTERRUPTED');
	assert.equal(failure.exitCode, 130);
	assert.equal(failure.message, 'build interrupted by SIGINT');
	assert.equal(record.stops.length, 1);
	assert.deepEqual(events.filter(event => event.kind === 'host-phase' && event.phase === 'teardown').map(event => event.kind === 'host-phase' && event.state), ['start', 'end']);
	assert.equal(fs.existsSync(dest), false);
	assert.deepEqual(scratchLeft(), []);
});

test('an abort without a reason ends the build as interrupted (exit 130)', async () => {
	const controller = new AbortController();
	const {error, record} = await build(holdScript('linux/ppc64le'), {
		signal: controller.signal,
		onEvent(event) {
			if (event.kind === 'agent' && event.event.event === 'hello') {
				controller.abort();
			}
		},
	});
	const failure = userError(error);
	assert.equal(failure.code, 'E_INTERRUPTED');
	assert.equal(failure.exitCode, 130);
	assert.equal(record.stops.length, 1);
});

test('a sandbox start that rejects stops nothing, and the scratch is removed', async () => {
	const {error, record} = await build(successScript(['linux/ppc64le']), {startError: new UserError('newuidmap failed', {code: 'E_SANDBOX', exitCode: 1})});
	assert.equal(userError(error).message, 'newuidmap failed');
	assert.equal(record.starts.length, 1);
	assert.equal(record.stops.length, 0);
	assert.equal(record.runs.length, 0);
	assert.deepEqual(scratchLeft(), []);
});

test('--engine buildkit on a builder without BuildKit is refused (exit 2) before any sandbox starts', async () => {
	const {error, record} = await build(successScript(['linux/ppc64le']), {request: request({engine: 'buildkit'})});
	const failure = userError(error);
	assert.equal(failure.code, 'E_ENGINE_MISSING');
	assert.equal(failure.exitCode, 2);
	assert.equal(record.starts.length, 0);
	assert.equal(record.reaps, 0);
});

test('a builder that is not stored is made through the store, and the build runs in it', async () => {
	const made = builderRecord();
	const store = fakeBuilderStore(undefined, made);
	const {error, record} = await build(successScript(['linux/ppc64le']), {store});
	assert.equal(error, undefined);
	assert.equal(store.ensured, 1);
	assert.equal(record.starts[0]!.builderImage, made);
});

test('--load on a driver without an image store is refused before anything starts', async () => {
	const {error, record} = await build(successScript(['linux/ppc64le']), {request: request({load: true, tag: ['demo:1'], output: [`type=oci,dest=${newDest()}`]})});
	assert.equal(userError(error).code, 'E_USAGE');
	assert.equal(record.reaps, 0);
	assert.equal(record.starts.length, 0);
});

// The stages, one at a time.

/** A one-platform layout whose image config has no `history` (legal OCI; mmdebstrap-made images look like this). */
const historylessLayout = async (dir: string): Promise<string> => {
	const writer = new LayoutWriter(dir);
	const tree = path.join(`${dir}-tree`);
	fs.mkdirSync(tree, {recursive: true});
	fs.writeFileSync(path.join(tree, 'f'), 'x');
	await tar.c({cwd: tree, file: `${tree}.tar`, portable: true}, ['f']);
	const {descriptor, diffId} = await writer.addLayer(`${tree}.tar`);
	const config = await writer.addBlob(JSON.stringify({architecture: 'ppc64le', os: 'linux', rootfs: {type: 'layers', diff_ids: [diffId]}}), mediaTypes.config);
	const manifest = await writer.addBlob(JSON.stringify({schemaVersion: 2, mediaType: mediaTypes.manifest, config, layers: [descriptor]}), mediaTypes.manifest);
	await writer.finish({...manifest, platform: {architecture: 'ppc64le', os: 'linux'}} as Descriptor);
	return dir;
};

test('stage inputs: resolveInputs reads each base\'s history length per platform, and refuses a base without a requested platform', async () => {
	const withHistory = path.join(root, 'base-history');
	await writeSmallLayout(withHistory, ['linux/ppc64le', 'linux/s390x']);
	const without = await historylessLayout(path.join(root, 'base-nohistory'));
	const resolved = await resolveInputs(request({buildContext: [`busybox=oci-layout://${withHistory}`, `debian=oci-layout://${without}`]}));
	assert.deepEqual(resolved.bases, [{name: 'busybox', platform: 'linux/ppc64le', historyEntries: 1}, {name: 'debian', platform: 'linux/ppc64le', historyEntries: 0}]);
	assert.equal(resolved.contexts.length, 2);

	await assert.rejects(resolveInputs(request({platform: ['linux/riscv64'], buildContext: [`busybox=oci-layout://${withHistory}`]})), (error: unknown) => {
		const failure = userError(error);
		return failure.exitCode === 2 && /has no image for linux\/riscv64/.test(failure.message);
	});
});

test('stage inputs: stageInputs writes the stdin Dockerfile, one view per base and platform, and lists the src= secret files', async () => {
	const base = path.join(root, 'base-stage');
	await writeSmallLayout(base, ['linux/ppc64le', 'linux/s390x']);
	const secret = path.join(root, 'token');
	fs.writeFileSync(secret, 'hunter2');
	const stdinRequest = {...request({platform: ['linux/ppc64le,linux/s390x'], buildContext: [`busybox=oci-layout://${base}`], secret: [`id=tok,src=${secret}`, 'id=env1,env=SOME_TOKEN']}, {SOME_TOKEN: 'x'}), dockerfileText: 'FROM busybox\n'};
	const resolved = await resolveInputs(stdinRequest);
	const scratch = fs.mkdtempSync(path.join(root, 'scratch-'));
	fs.mkdirSync(path.join(scratch, 'views'));
	const staged = await stageInputs(stdinRequest, resolved, {root: scratch, viewsDir: path.join(scratch, 'views')});
	assert.equal(staged.request.dockerfile, path.join(scratch, 'dockerfile', 'Dockerfile'));
	assert.equal(fs.readFileSync(staged.request.dockerfile, 'utf8'), 'FROM busybox\n');
	assert.deepEqual([...staged.secretFiles], [['tok', secret]]);
	assert.deepEqual(staged.contexts, [{name: 'busybox', layoutDir: base, topDigest: resolved.contexts[0]!.manifests.topDigest}]);
	for (const [platform, slug] of [['linux/ppc64le', 'linux-ppc64le'], ['linux/s390x', 'linux-s390x']] as const) {
		const view = path.join(scratch, 'views', '0', slug);
		const index = JSON.parse(fs.readFileSync(path.join(view, 'index.json'), 'utf8')) as {manifests: Array<{digest: string; annotations: Record<string, string>}>};
		assert.equal(index.manifests[0]!.digest, resolved.contexts[0]!.manifests.platforms.get(platform)!.digest);
		assert.equal(index.manifests[0]!.annotations['org.opencontainers.image.ref.name'], 'busybox');
		assert.equal(fs.readlinkSync(path.join(view, 'blobs')), `${sandboxPaths.contexts}/0/blobs`);
	}
});

test('boot: a start that rejects is not stopped; a start still running when the build is aborted is stopped once it is up', async () => {
	const phases = hostPhases(recordingReporter(), undefined);
	const {driver, record} = createReplayDriver({script: successScript(['linux/ppc64le']), startError: new Error('no subuid range')});
	const spec = {sessionId: 'exo-test', builderImage: builderRecord(), mounts: []};
	await assert.rejects(bootSandbox(driver, spec, phases), /no subuid range/);
	assert.equal(record.stops.length, 0);

	const controller = new AbortController();
	let up: ((box: Sandbox) => void) | undefined;
	const stops: string[] = [];
	const slow: Pick<SandboxDriver, 'start'> = {
		async start() {
			return new Promise<Sandbox>(resolve => {
				up = resolve;
			});
		},
	};
	const booting = bootSandbox(slow, spec, hostPhases(recordingReporter(), controller.signal));
	controller.abort(interruptedBy('SIGTERM', 'build'));
	await assert.rejects(booting, /build interrupted by SIGTERM/);
	assert.equal(stops.length, 0);
	up!({id: 'late', async runAgent() {
		return {exitCode: 0, signal: undefined};
	}, async stop() {
		stops.push('late');
	}});
	await new Promise(resolve => setImmediate(resolve));
	assert.deepEqual(stops, ['late']);
});

test('teardown: the phase stops the sandbox once; the finally path then does nothing, and stops one still up', async () => {
	const reporter = recordingReporter();
	const phases = hostPhases(reporter, undefined);
	const {driver, record} = createReplayDriver({script: successScript(['linux/ppc64le'])});
	const spec = {sessionId: 'exo-teardown', builderImage: builderRecord(), mounts: []};
	const booted = await bootSandbox(driver, spec, phases);
	await tearDown(booted, phases);
	await tearDownRemaining(booted, reporter);
	await booted.stop();
	assert.deepEqual(record.stops, ['replay-exo-teardown']);
	assert.ok(phases.phaseMs['teardown'] !== undefined);

	const second = await bootSandbox(driver, {...spec, sessionId: 'exo-teardown-2'}, phases);
	const before = reporter.events.length;
	await tearDownRemaining(second, reporter);
	assert.deepEqual(record.stops, ['replay-exo-teardown', 'replay-exo-teardown-2']);
	assert.deepEqual(reporter.events.slice(before), [{kind: 'host-phase', phase: 'teardown', state: 'start'}, {kind: 'host-phase', phase: 'teardown', state: 'end'}]);
});

test('run-agent stage: the argv is the agent\'s, env= secrets go on stdin, events become handlers, steps and phase times', async () => {
	const env = {TOKEN: 's3cr3t'};
	const built = request({secret: ['id=tok,env=TOKEN']}, env);
	const {driver, record} = createReplayDriver({script: successScript(['linux/ppc64le'])});
	const out = fs.mkdtempSync(path.join(root, 'agent-out-'));
	const sandbox = await driver.start({sessionId: 'exo-agent', builderImage: builderRecord(), mounts: [{hostPath: out, sandboxPath: sandboxPaths.out, readOnly: false}]});
	const reporter = recordingReporter();
	const added: Array<[string, number]> = [];
	const staged = {request: built, contexts: [], secretFiles: new Map<string, string>()};
	const stage = await runAgentStage({
		sandbox, staged, cache: {dir: '/host/cache'}, engine: {engine: engines.buildah, warnings: []}, reporter, phases: {add: (phase, ms) => added.push([phase, ms])}, env,
		outDir: out, sessionId: 'exo-agent', debug: false,
	});
	const layout = sandboxLayout(built, [], {dir: '/host/cache'});
	const plan = engines.buildah.plan(built, {...layout, cache: {...layout.cache, importable: false}});
	assert.deepEqual(record.runs[0]!.args, agentArgs(built.platforms, plan, {hangTimeoutSeconds: built.hangTimeoutSeconds, secretsFromStdin: 1, debug: false}));
	assert.equal(record.runs[0]!.stdin, `tok\t${Buffer.from('s3cr3t').toString('base64')}\n`);
	assert.equal(stage.result.platforms[0], 'linux/ppc64le');
	assert.deepEqual(stage.handlers.map(handler => handler.proof), ['ppc64le']);
	assert.deepEqual(stage.steps.map(step => step.name), ['[linux/ppc64le 1/2] FROM busybox', '[linux/ppc64le 2/2] RUN echo hi > /hi']);
	assert.deepEqual(added.map(([phase]) => phase), ['binfmt', 'engine-start', 'platform-check', 'base-images', 'build', 'export']);
	const steps = reporter.events.filter(event => event.kind === 'step').map(event => event.kind === 'step' && `${event.id} ${event.state}`);
	assert.deepEqual(steps, ['1 start', '1 done', '2 start', '2 cached', '2 done']);
});

test('run-agent stage: each outcome maps to its UserError and exit code', () => {
	const failed = {kind: 'failed', error: {v: 1, event: 'error', code: 'E_PLATFORM_UNSUPPORTED', message: 'buildkit lists no linux/riscv64'}, exitCode: 1} as const;
	assert.throws(() => resultOf(failed, undefined), (error: unknown) => userError(error).exitCode === errorTable.E_PLATFORM_UNSUPPORTED.exitCode && userError(error).code === 'E_PLATFORM_UNSUPPORTED');
	assert.throws(() => resultOf({kind: 'succeeded', result: undefined}, undefined), (error: unknown) => userError(error).code === 'E_AGENT_CRASHED');
	assert.throws(() => resultOf({kind: 'crashed', exitCode: undefined, signal: 'SIGKILL', lastStderr: undefined}, undefined), /exit code -, signal SIGKILL\)$/);
	const stopped = interruptedBy('SIGHUP', 'build');
	const controller = new AbortController();
	controller.abort(stopped);
	assert.throws(() => resultOf({kind: 'interrupted'}, controller.signal), (error: unknown) => error === stopped);
});

test('deliver outputs: an empty exported layout is an export failure; no --output warns that the image was discarded', async () => {
	const empty = fs.mkdtempSync(path.join(root, 'empty-'));
	fs.mkdirSync(path.join(empty, 'oci-layout'));
	fs.writeFileSync(path.join(empty, 'oci-layout', 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}\n');
	fs.writeFileSync(path.join(empty, 'oci-layout', 'index.json'), '{"schemaVersion":2,"manifests":[]}\n');
	await assert.rejects(readExportedImage(empty), (error: unknown) => userError(error).code === 'E_EXPORT_FAILED');

	const out = fs.mkdtempSync(path.join(root, 'exported-'));
	const top = await writeSmallLayout(path.join(out, 'oci-layout'), ['linux/ppc64le']);
	const image = await readExportedImage(out);
	assert.equal(image.top.digest, top.digest);
	assert.match(image.configDigest ?? '', /^sha256:/);
	const reporter = recordingReporter();
	await deliverOutputs({request: request(), image, driver: {}, outDir: out, phases: hostPhases(reporter, undefined), reporter});
	assert.deepEqual(reporter.events.map(event => event.kind), ['warning']);
	assert.match((reporter.events[0] as {message: string}).message, /^no --output given: the image was discarded/);
});

test('deliver outputs: --load with a local output packs an archive for the store and reports its notes', async () => {
	const out = fs.mkdtempSync(path.join(root, 'load-'));
	const top = await writeSmallLayout(path.join(out, 'oci-layout'), ['linux/ppc64le']);
	const loads: Array<{archive: string; tags: readonly string[]; topDigest: string}> = [];
	const driver: Pick<SandboxDriver, 'loadImage'> = {
		async loadImage(archive, tags) {
			loads.push({archive, tags, topDigest: (await inspectArchive(archive)).topDigest});
			return {loaded: ['demo:1'], notes: ['loaded as demo:1']};
		},
	};
	const reporter = recordingReporter();
	const localDest = path.join(root, 'local-out');
	await deliverOutputs({request: request({load: true, tag: ['demo:1'], output: [`type=local,dest=${localDest}`]}), image: await readExportedImage(out), driver, outDir: out, phases: hostPhases(reporter, undefined), reporter});
	assert.deepEqual(loads, [{archive: path.join(out, 'load.tar'), tags: ['demo:1'], topDigest: top.digest}]);
	assert.equal(fs.readFileSync(path.join(localDest, 'hello'), 'utf8'), 'hello from linux/ppc64le\n');
	assert.deepEqual(hostPhaseStarts(reporter.events), ['archive', 'load']);
	assert.ok(reporter.events.some(event => event.kind === 'warning' && event.message === 'loaded as demo:1'));
});

test('deliver outputs: --metadata-file has buildx\'s keys and --iidfile the config digest', async () => {
	const metadataFile = path.join(root, 'meta.json');
	const iidFile = path.join(root, 'iid');
	const built = {...request({tag: ['demo:1']}), metadataFile, iidFile};
	const result: BuildResult = {
		digest: `sha256:${'1'.repeat(64)}`, platforms: ['linux/ppc64le'], engine: 'buildah', output: undefined,
		descriptor: {mediaType: mediaTypes.manifest, digest: `sha256:${'1'.repeat(64)}`, size: 400}, configDigest: `sha256:${'2'.repeat(64)}`,
		handlers: [], steps: [], phaseMs: {},
	};
	await writeResultFiles(built, result);
	assert.deepEqual(JSON.parse(fs.readFileSync(metadataFile, 'utf8')), JSON.parse(JSON.stringify(resultMetadata(built, result))));
	assert.equal(JSON.parse(fs.readFileSync(metadataFile, 'utf8'))['image.name'], 'docker.io/library/demo:1');
	assert.equal(fs.readFileSync(iidFile, 'utf8'), result.configDigest);
});

test('host phases are timed with the given clock and refused once the build is aborted', async () => {
	let clock = 1000;
	const reporter = recordingReporter();
	const controller = new AbortController();
	const phases = hostPhases(reporter, controller.signal, () => clock);
	await phases.run('archive', async () => {
		clock += 250;
	});
	assert.equal(phases.phaseMs['archive'], 250);
	controller.abort(interruptedBy('SIGTERM', 'build'));
	let ran = false;
	await assert.rejects(phases.run('push', async () => {
		ran = true;
	}), /interrupted by SIGTERM/);
	assert.equal(ran, false);
});

test('decideEngine: BuildKit wherever the builder has it, buildah otherwise; what buildah cannot do is refused when auto means buildah', () => {
	const planned = (kind: BuilderImage['kind'], buildkit = false) => {
		const image = {...builderRecord(kind), ...(buildkit ? {buildkit: {version: 'v0.32.2', sha256: 'd'.repeat(64)}} : {})};
		return {kind, reference: image.reference, image};
	};
	assert.equal(decideEngine(request(), planned('containerfile'), []).engine.name, 'buildkit');
	assert.equal(decideEngine(request(), planned('distro', true), []).engine.name, 'buildkit');
	assert.equal(decideEngine(request(), planned('distro'), []).engine.name, 'buildah');
	assert.equal(decideEngine(request(), {kind: 'distro', reference: '(to be made)', image: undefined}, []).engine.name, 'buildkit');
	assert.throws(() => decideEngine(request({cacheFilter: ['build']}), planned('distro'), []), (error: unknown) => userError(error).code === 'E_ENGINE_UNSUPPORTED');
	assert.throws(() => decideEngine(request({progress: 'rawjson'}), planned('distro'), []), (error: unknown) => userError(error).exitCode === 2);
	assert.deepEqual(decideEngine(request(), planned('distro'), [{name: 'debian', platform: 'linux/ppc64le', historyEntries: 0}]).warnings.length, 1);
});

test('the mounts the pipeline gives the sandbox are the agent module\'s (context read-only, out read-write)', async () => {
	const {record} = await build(successScript(['linux/ppc64le']));
	const spec = record.starts[0]!;
	const out = spec.mounts.find(mount => mount.sandboxPath === sandboxPaths.out)!;
	const expected = buildMounts(request(), [], {outDir: out.hostPath, viewsDir: path.join(path.dirname(out.hostPath), 'views')}, spec.mounts.find(mount => mount.sandboxPath === sandboxPaths.cache) === undefined ? {} : {dir: spec.mounts.find(mount => mount.sandboxPath === sandboxPaths.cache)!.hostPath});
	assert.deepEqual(spec.mounts, expected);
	assert.ok(spec.mounts.some(mount => mount.sandboxPath === sandboxPaths.context && mount.readOnly && mount.hostPath === context));
});


test('kept state is the driver\'s capability: a volume-keeping driver gets its slot volume attached (no host folder, no project cache); one whose volumes are unavailable says why once and builds with the project cache', async () => {
	const withBuildKit = {...builderRecord('distro'), buildkit: {version: 'v0.32.2', sha256: 'd'.repeat(64)}};
	const agentRoot = (args: readonly string[]): boolean => args.includes(sandboxPaths.engineState);

	// An old CLI (the real module, told its version): no volume made, one warning, the project cache mounted.
	const old = await build(successScript(['linux/ppc64le']), {
		store: fakeBuilderStore(withBuildKit), engineState: {kind: 'volume', volumes: createStateVolumes(async () => [0, 11, 0])},
	});
	assert.equal(old.error, undefined, String(old.error));
	const warnings = old.events.flatMap(event => (event.kind === 'warning' ? [event.message] : []));
	assert.deepEqual(warnings.filter(message => /state is not kept/.test(message)), [
		'BuildKit\'s state is not kept between builds: container 0.11.0 cannot make journaled volumes (volume create --opt journal arrived in 0.12.0); upgrade it to keep BuildKit\'s state',
	]);
	assert.deepEqual(old.record.starts[0]!.volumes, []);
	assert.ok(old.record.starts[0]!.mounts.some(mount => mount.sandboxPath === sandboxPaths.cache), 'the project cache instead');
	assert.equal(old.record.starts[0]!.mounts.some(mount => mount.sandboxPath === sandboxPaths.engineState), false);

	// Volumes available (the real module against the CLI simulator): slot 0's volume at the engine-state path, BuildKit's --root there.
	process.env['EXOBUILD_CONTAINER_CLI'] = fileURLToPath(new URL('../../../test/simulators/apple-container/container', import.meta.url));
	process.env['CONTAINER_SIM_ROOT'] = path.join(root, 'sim');
	try {
		await execa(process.env['EXOBUILD_CONTAINER_CLI'], ['system', 'start']);
		const kept = await build(successScript(['linux/ppc64le']), {store: fakeBuilderStore(withBuildKit), engineState: {kind: 'volume', volumes: createStateVolumes(async () => [1, 2, 2])}});
		assert.equal(kept.error, undefined, String(kept.error));
		assert.deepEqual(kept.record.starts[0]!.volumes, [{volume: stateVolumeName(0, cacheKeyOf(cacheDir())), sandboxPath: sandboxPaths.engineState}]);
		assert.equal(kept.record.starts[0]!.mounts.some(mount => mount.sandboxPath === sandboxPaths.engineState || mount.sandboxPath === sandboxPaths.cache), false);
		assert.ok(agentRoot(kept.record.runs[0]!.args), 'the agent runs buildkitd with --root at the volume');
	} finally {
		delete process.env['EXOBUILD_CONTAINER_CLI'];
		delete process.env['CONTAINER_SIM_ROOT'];
	}
});
