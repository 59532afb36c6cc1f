/**
 * The apple-container driver end to end, through the simulator of Apple's `container` CLI
 * (test/simulators/apple-container): the grammar and JSON shapes are the real CLI's, and each
 * VM is a real linux-userns sandbox, so these builds are real emulated builds.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {execa} from 'execa';
import {ensureBuilderImage} from '../../src/builder-image/index.js';
import {inspectArchive} from '../../src/oci/index.js';
import {parseImageInspect} from '../../src/sandboxes/apple-container/shapes.js';
import {cacheKeyOf, stateVolumeName} from '../../src/sandboxes/apple-container/state-volumes.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, exobuild, exobuildEnv, failure, fixturesDir, hostBinfmtSnapshot, makeContext, repoRoot} from './helpers.js';

const simulator = path.join(repoRoot, 'test', 'simulators', 'apple-container', 'container');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-apple-'));
const simRoot = path.join(work, 'sim');
const simEnv = {EXOBUILD_CONTAINER_CLI: simulator, CONTAINER_SIM_ROOT: simRoot};
const container = async (...args: string[]) => execa(simulator, args, {reject: false, env: simEnv});

let layout: string;
let binfmtBefore: string;
before(async () => {
	Object.assign(process.env, exobuildEnv);
	await ensureBuilderImage({}); // the distro builder: `container build` of Containerfile.builder needs a registry
	layout = await busyboxLayout(['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/arm64', 'linux/amd64'], path.join(fixturesDir, 'busybox'));
	binfmtBefore = hostBinfmtSnapshot();
});
after(async () => {
	await container('delete', '--all', '--force');
	fs.rmSync(work, {recursive: true, force: true});
});

const hello = makeContext(path.join(work, 'hello'), {
	Dockerfile: 'FROM busybox\nARG TARGETPLATFORM\nRUN uname -m > /uname.txt && echo "$TARGETPLATFORM" > /platform.txt\n',
});
const sleeper = makeContext(path.join(work, 'sleeper'), {Dockerfile: 'FROM busybox\nRUN echo step-is-running && sleep 600\n'});

const calls = (): string[][] => fs.readFileSync(path.join(simRoot, 'calls.jsonl'), 'utf8').trim().split('\n').map(line => (JSON.parse(line) as {argv: string[]}).argv);

const vms = async (): Promise<Array<Record<string, unknown>>> => {
	const listed = await container('list', '--all', '--format', 'json');
	assert.equal(listed.exitCode, 0, listed.stderr);
	return JSON.parse(listed.stdout) as Array<Record<string, unknown>>;
};

test('a stopped container system, or a CLI older than 0.12, is refused with the version, the cause and the fix', async () => {
	const args = ['build', '--driver', 'apple-container', '--platform', 'linux/ppc64le', hello];
	const stopped = await exobuild(args, {env: simEnv});
	assert.equal(stopped.exitCode, 2, stopped.all);
	assert.match(String(stopped.stderr), /container's system service is not running \(container 1\.2\.2 says: /);
	assert.match(String(stopped.stderr), /hint: start it with `container system start`/);

	assert.equal((await container('system', 'start')).exitCode, 0);
	const old = await exobuild(args, {env: {...simEnv, CONTAINER_SIM_VERSION: '0.11.0'}});
	assert.equal(old.exitCode, 2, old.all);
	assert.match(String(old.stderr), /container 0\.11\.0 is too old: exobuild needs --cap-add, which arrived in 0\.12\.0/);
	assert.equal(calls().some(argv => argv[0] === 'run'), false, 'no VM was started');
});

test('--driver apple-container --platform linux/ppc64le,linux/s390x --load -t demo builds in one VM, loads and tags, leaves nothing', async () => {
	const dest = path.join(work, 'demo.tar');
	const result = await exobuild(['build', '--progress', 'plain', '--driver', 'apple-container', '--platform', 'linux/ppc64le,linux/s390x',
		'--build-context', `busybox=oci-layout://${layout}`, '--load', '-t', 'demo', '--output', `type=oci,dest=${dest}`, hello], {env: simEnv});
	assert.equal(result.exitCode, 0, failure(result));

	// The archive is right for each platform.
	const archive = await inspectArchive(dest);
	assert.deepEqual(archive.images.map(image => image.platform).sort(), ['linux/ppc64le', 'linux/s390x']);
	for (const image of archive.images) {
		assert.equal((await image.readFile('/uname.txt'))?.toString().trim(), image.platform === 'linux/ppc64le' ? 'ppc64le' : 's390x');
	}

	// It is in the store under its tag.
	const inspected = await container('image', 'inspect', 'demo');
	assert.equal(inspected.exitCode, 0, inspected.stderr);
	assert.deepEqual(parseImageInspect(JSON.parse(inspected.stdout), [1, 2, 2]).map(image => [image.name, [...image.platforms].sort()]), [['docker.io/library/demo:latest', ['linux/ppc64le', 'linux/s390x']]]);

	// One VM, started with the grammar the real CLI takes.
	const runs = calls().filter(argv => argv[0] === 'run');
	assert.equal(runs.length, 1);
	const [runArgv] = runs;
	for (const expected of ['--rm', '--cap-add', 'ALL', '--cpus', '--memory', '--entrypoint']) {
		assert.ok(runArgv!.includes(expected), `${expected} in ${runArgv!.join(' ')}`);
	}

	// CONTAINER_DEFAULT_PLATFORM must not choose the VM's platform.
	assert.equal(runArgv![runArgv!.indexOf('--platform') + 1], `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`);

	assert.ok(!runArgv!.includes('--privileged'));
	assert.ok(runArgv!.some(arg => arg.startsWith('dev.exobuild.owner-pid=')));
	assert.ok(calls().some(argv => argv[0] === 'image' && argv[1] === 'load'), 'the builder and the result were loaded with image load');

	assert.deepEqual(await vms(), [], '--rm removed the VM');
	assert.equal(hostBinfmtSnapshot(), binfmtBefore, 'the host\'s binfmt_misc is untouched');
	await assertNothingLeft();
});

test('where the store refuses a multi-platform index, --load loads one image per platform and says so', async () => {
	const result = await exobuild(['build', '--progress', 'plain', '--driver', 'apple-container', '--platform', 'linux/ppc64le,linux/s390x',
		'--build-context', `busybox=oci-layout://${layout}`, '--load', '-t', 'split:1', hello], {env: {...simEnv, CONTAINER_SIM_REFUSE_INDEX: '1'}});
	assert.equal(result.exitCode, 0, failure(result));
	assert.match(String(result.stderr), /refused the multi-platform index .*; loaded one image per platform instead: split:1-ppc64le, split:1-s390x/);
	for (const tag of ['split:1-ppc64le', 'split:1-s390x']) {
		assert.equal((await container('image', 'inspect', tag)).exitCode, 0, tag);
	}

	await assertNothingLeft();
});

for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
	test(`${signal} mid-build deletes the VM before exit`, async () => {
		const child = exobuild(['build', '--progress', 'plain', '--driver', 'apple-container', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, sleeper], {env: simEnv});
		await waitFor(child, 'step-is-running');
		child.kill(signal);
		const result = await child;
		assert.equal(result.exitCode, code, result.all);
		assert.ok(calls().some(argv => argv[0] === 'delete' && argv.includes('--force')), 'the VM was deleted with delete --force');
		assert.deepEqual(await vms(), []);
		await assertNothingLeft();
	});
}

test('SIGKILL mid-build leaves a running VM that the next run finds by its labels and deletes', async () => {
	const child = exobuild(['build', '--progress', 'plain', '--driver', 'apple-container', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, sleeper], {env: simEnv});
	await waitFor(child, 'step-is-running');
	child.kill('SIGKILL');
	await child;
	const left = await vms();
	assert.equal(left.length, 1, 'the VM outlives its killed owner');
	assert.equal((left[0]!['status'] as {state: string}).state, 'running');

	const pruned = await exobuild(['prune', '--driver', 'apple-container'], {env: simEnv});
	assert.equal(pruned.exitCode, 0, failure(pruned));
	assert.match(String(pruned.stdout), /^sandbox exobuild-exo-/m);
	assert.deepEqual(await vms(), []);
	await assertNothingLeft();
});

test('builder build runs `container build -t` of Containerfile.builder (no --output: type=oci,dest writes nothing) with the derived build args, and says what to do offline', async () => {
	const built = await exobuild(['builder', 'build', '--driver', 'apple-container', '--force'], {env: simEnv});
	assert.equal(built.exitCode, 1, built.all);
	assert.match(String(built.stderr), /build -f .*Containerfile\.builder failed/);
	assert.match(String(built.stderr), /hint: .*exobuild builder load -i FILE/);
	const build = calls().filter(argv => argv[0] === 'build').at(-1)!;
	assert.ok(build.includes('--file') && build[build.indexOf('--file') + 1]!.endsWith('Containerfile.builder'));
	assert.ok(build.some(arg => /^ARCH_PAIRS=.*ppc64le=ppc64el/.test(arg)), build.join(' '));
	assert.ok(build.some(arg => /^EXOBUILD_INPUT_HASH=[a-f\d]{64}$/.test(arg)));
	assert.ok(!build.includes('--output') && !build.includes('-o'), build.join(' '));
	assert.match(build[build.indexOf('--tag') + 1]!, /^exobuild-image-build:\d+-\d+$/);
	assert.match(build[build.indexOf('--platform') + 1]!, /^linux\/(amd64|arm64)$/);
	assert.ok(build.includes('--cpus') && build.includes('--memory'), 'the builder VM\'s resources are explicit, not config.toml\'s');
	assert.equal(build.at(-1), repoRoot.replace(/\/$/, ''));
	assert.equal(calls().some(argv => argv[0] === 'image' && argv[1] === 'save' && argv.some(arg => arg.startsWith('exobuild-image-build:'))), false, 'nothing to save after a failed build');
});

test('--rosetta: the agent finds Rosetta\'s binfmt entry (vminitd\'s, flags CF) and registers no QEMU over it; without --rosetta it registers QEMU', async () => {
	// The simulator plays Rosetta the other way round on an amd64 host (GRAMMAR.md): arm64 through it.
	const [platform, machine, qemu] = os.machine() === 'aarch64' ? ['linux/amd64', 'x86_64', 'qemu-x86_64'] : ['linux/arm64', 'aarch64', 'qemu-aarch64'];
	const build = async (rosetta: boolean, dest: string) => exobuild(['build', '--progress', 'plain', '--driver', 'apple-container', ...(rosetta ? ['--rosetta'] : []), '--platform', platform,
		'--build-context', `busybox=oci-layout://${layout}`, '--output', `type=oci,dest=${dest}`, hello], {env: simEnv});
	const withRosetta = await build(true, path.join(work, 'rosetta.tar'));
	assert.equal(withRosetta.exitCode, 0, failure(withRosetta));
	assert.match(String(withRosetta.stderr), new RegExp(`${platform}: native \\(uname -m: ${machine}\\)`), 'the probe ran through Rosetta\'s entry');
	assert.doesNotMatch(String(withRosetta.stderr), new RegExp(`${qemu} →`), `no ${qemu} registered over Rosetta's entry`);
	assert.ok(calls().filter(argv => argv[0] === 'run').at(-1)!.includes('--rosetta'));
	const archive = await inspectArchive(path.join(work, 'rosetta.tar'));
	assert.equal((await archive.images[0]!.readFile('/uname.txt'))?.toString().trim(), machine, 'the RUN step ran through Rosetta\'s entry');

	const withoutRosetta = await build(false, path.join(work, 'no-rosetta.tar'));
	assert.equal(withoutRosetta.exitCode, 0, failure(withoutRosetta));
	assert.match(String(withoutRosetta.stderr), new RegExp(`${platform}: ${qemu} → `), 'without Rosetta the agent registers QEMU');
	await assertNothingLeft();
});

/** Slot N's state volume of the e2e cache folder (the volume names carry a hash of it). */
const stateVolume = (slot: number): string => stateVolumeName(slot, cacheKeyOf(exobuildEnv.EXOBUILD_CACHE_DIR));

/** The state volumes attached by the `run` calls from index `from` of calls.jsonl on. */
const attachedVolumes = (from: number): string[] => calls().slice(from).filter(argv => argv[0] === 'run')
	.map(argv => argv.filter((arg, index) => argv[index - 1] === '--volume' && arg.startsWith(stateVolume(0).replace(/0$/, '')) && arg.endsWith(':/exobuild/engine-state')).join(' '));

const stateVolumes = async (): Promise<Array<{name: string; labels: Record<string, string>}>> => {
	const listed = await container('volume', 'list', '--format', 'json');
	assert.equal(listed.exitCode, 0, listed.stderr);
	return (JSON.parse(listed.stdout) as Array<{configuration: {name: string; labels: Record<string, string>}}>)
		.map(({configuration: {name, labels}}) => ({name, labels})).filter(volume => volume.name.startsWith('exobuild-state-'));
};

test('BuildKit\'s state is kept in a labelled container volume per slot: the second build attaches the same one (steps CACHED), two builds at once use two, prune removes them', async () => {
	// From no kept state (earlier tests left theirs, some unsealed by the signals they sent).
	const pruned = await exobuild(['prune', '--driver', 'apple-container', '--max-cache-size', '0'], {env: simEnv});
	assert.equal(pruned.exitCode, 0, pruned.all);
	assert.deepEqual(await stateVolumes(), []);
	const kept = makeContext(path.join(work, 'kept'), {Dockerfile: 'FROM busybox\nRUN echo kept-in-a-volume > /kept.txt\n'});
	const build = async (context: string) => exobuild(['build', '--progress', 'plain', '--engine', 'buildkit', '--driver', 'apple-container', '--platform', 'linux/ppc64le',
		'--build-context', `busybox=oci-layout://${layout}`, context], {env: simEnv});
	// BuildKit's lines come after the progress time prefix (`#  6.9s #5 [1/2] RUN …`).
	const runStep = (stderr: string): string | undefined => /#(\d+) \[[^\]]*\] RUN echo kept-in-a-volume/.exec(stderr)?.[1];

	let mark = calls().length;
	const first = await build(kept);
	assert.equal(first.exitCode, 0, first.all);
	const created = calls().slice(mark).filter(argv => argv[0] === 'volume' && argv[1] === 'create');
	assert.deepEqual(created, [['volume', 'create', '--label', 'dev.exobuild.state=buildkit', '--label', 'dev.exobuild.state-slot=0', '--opt', 'journal=ordered', `${stateVolume(0)}`]]);
	assert.deepEqual(await stateVolumes(), [{name: `${stateVolume(0)}`, labels: {'dev.exobuild.state': 'buildkit', 'dev.exobuild.state-slot': '0'}}]);
	assert.deepEqual(attachedVolumes(mark), [`${stateVolume(0)}:/exobuild/engine-state`]);
	assert.doesNotMatch(String(first.stderr), /kept state/, 'a new volume is no warning');

	mark = calls().length;
	const second = await build(kept);
	assert.equal(second.exitCode, 0, second.all);
	assert.deepEqual(attachedVolumes(mark), [`${stateVolume(0)}:/exobuild/engine-state`], 'the same volume');
	assert.equal(calls().slice(mark).some(argv => argv[0] === 'volume' && argv[1] === 'create'), false, 'nothing made again');
	const step = runStep(String(second.stderr));
	assert.ok(step !== undefined && new RegExp(`#${step} CACHED$`, 'm').test(String(second.stderr)), `the RUN step is CACHED from the kept state:\n${String(second.stderr)}`);

	mark = calls().length;
	const other = makeContext(path.join(work, 'kept-other'), {Dockerfile: 'FROM busybox\nRUN echo another-project > /other.txt\n'});
	const both = await Promise.all([build(kept), build(other)]);
	for (const result of both) {
		assert.equal(result.exitCode, 0, result.all);
	}

	assert.deepEqual(attachedVolumes(mark).sort(), [`${stateVolume(0)}:/exobuild/engine-state`, `${stateVolume(1)}:/exobuild/engine-state`]);

	const removed = await exobuild(['prune', '--driver', 'apple-container', '--max-cache-size', '0'], {env: simEnv});
	assert.equal(removed.exitCode, 0, removed.all);
	assert.match(String(removed.stdout), /^cache .*buildkit-0 /m);
	assert.deepEqual(await stateVolumes(), []);
	assert.ok(calls().some(argv => argv.join(' ') === `volume delete ${stateVolume(1)}`));
	await assertNothingLeft();
});

test('the linux-userns driver refuses --load and VM options before anything starts', async () => {
	const load = await exobuild(['build', '--driver', 'linux-userns', '--load', '-t', 'x', hello]);
	assert.equal(load.exitCode, 2);
	assert.match(String(load.stderr), /--load: the linux-userns driver has no image store/);
	const memory = await exobuild(['build', '--driver', 'linux-userns', '--memory', '4G', hello]);
	assert.equal(memory.exitCode, 2);
	assert.match(String(memory.stderr), /--memory applies to the apple-container driver's VM/);
	const untagged = await exobuild(['build', '--driver', 'apple-container', '--load', hello], {env: simEnv});
	assert.match(String(untagged.stderr), /--load needs a name/);
});

async function waitFor(child: ReturnType<typeof exobuild>, text: string): Promise<void> {
	let seen = '';
	await new Promise<void>((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`"${text}" did not appear:\n${seen}`)), 300_000);
		child.stderr!.on('data', (chunk: Buffer) => {
			seen += chunk.toString();
			if (seen.includes(text)) {
				clearTimeout(timer);
				resolve();
			}
		});
		child.catch(reject);
	});
}
