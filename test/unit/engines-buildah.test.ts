/** buildah's engine module: the complete command line of every step for every flag, its refusals, its cache warning. */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {sandboxPaths} from '../../src/agent/agent-args.js';
import {baseFactsOf} from '../../src/engines/base-facts.js';
import {chooseEngine, engines} from '../../src/engines/index.js';
import {isUserError} from '../../src/errors.js';
import {StepTracker} from '../../src/progress/steps.js';
import {layoutFor, request} from './engines-fixtures.js';

const buildah = engines.buildah;
const storage = (root = '/exobuild/cache/buildah'): string[] => ['buildah', '--root', root, '--runroot', '/exobuild/state/run', '--storage-driver', 'overlay'];
const buildHead = (platform = 'linux/ppc64le', pull = 'missing'): string[] => [
	...storage(), 'build', '--isolation', 'chroot', '--network', 'host', '--platform', platform, `--pull=${pull}`, '--layers',
	'-f', '/exobuild/dockerfile/Dockerfile', '-t', `exobuild-out-${platform.replaceAll('/', '-')}`,
];

const buildArgv = (built = request()): readonly string[] => {
	const build = buildah.plan(built, layoutFor(built)).steps.find(step => step.kind === 'run' && step.phase === 'build');
	assert.ok(build !== undefined);
	return build.argv;
};

test('buildah plan, one platform: version, build, push to the OCI layout', () => {
	const built = request();
	assert.deepEqual(buildah.plan(built, layoutFor(built)), {
		engine: 'buildah',
		tmpfs: [],
		steps: [
			{kind: 'version', argv: ['buildah', '--version']},
			{
				kind: 'run', phase: 'build', platform: 'linux/ppc64le', errorCode: 'E_BUILD_FAILED', message: 'the build for linux/ppc64le failed (buildah)', watch: true,
				argv: [...buildHead(), '/exobuild/context'],
			},
			{
				kind: 'run', phase: 'export', errorCode: 'E_EXPORT_FAILED', message: 'writing the OCI layout failed (buildah push)', watch: false,
				argv: [...storage(), 'push', '--format', 'oci', 'exobuild-out-linux-ppc64le', 'oci:/exobuild/out/oci-layout:latest'],
			},
		],
	});
});

test('buildah plan, two platforms and a base: pulls from each platform\'s view, a build per platform, an image index', () => {
	const built = request({platform: ['linux/s390x,linux/arm/v7'], buildContext: ['base=oci-layout://layout']});
	const run = (phase: string, platform: string | undefined, argv: string[], errorCode: string, message: string, watch: boolean, mayFail = false) => ({
		kind: 'run', phase, ...(platform === undefined ? {} : {platform}), argv, errorCode, message, watch, ...(mayFail ? {mayFail} : {}),
	});
	assert.deepEqual(buildah.plan(built, layoutFor(built)), {
		engine: 'buildah',
		tmpfs: [],
		steps: [
			{kind: 'version', argv: ['buildah', '--version']},
			run('base-images', 'linux/s390x', [...storage(), 'pull', '-q', '--platform', 'linux/s390x', 'oci:/exobuild/views/0/linux-s390x:base'], 'E_BASE_IMAGE', 'loading base for linux/s390x from its OCI layout failed', false),
			run('build', 'linux/s390x', [...buildHead('linux/s390x', 'never'), '/exobuild/context'], 'E_BUILD_FAILED', 'the build for linux/s390x failed (buildah)', true),
			run('base-images', 'linux/arm/v7', [...storage(), 'pull', '-q', '--platform', 'linux/arm/v7', 'oci:/exobuild/views/0/linux-arm-v7:base'], 'E_BASE_IMAGE', 'loading base for linux/arm/v7 from its OCI layout failed', false),
			run('build', 'linux/arm/v7', [...buildHead('linux/arm/v7', 'never'), '/exobuild/context'], 'E_BUILD_FAILED', 'the build for linux/arm/v7 failed (buildah)', true),
			run('export', undefined, [...storage(), 'manifest', 'rm', 'exobuild-out-list'], 'E_EXPORT_FAILED', 'removing an earlier image index failed', false, true),
			run('export', undefined, [...storage(), 'manifest', 'create', 'exobuild-out-list'], 'E_EXPORT_FAILED', 'creating the image index failed', false),
			run('export', undefined, [...storage(), 'manifest', 'add', 'exobuild-out-list', 'containers-storage:localhost/exobuild-out-linux-s390x:latest'], 'E_EXPORT_FAILED', 'adding exobuild-out-linux-s390x to the image index failed', false),
			run('export', undefined, [...storage(), 'manifest', 'add', 'exobuild-out-list', 'containers-storage:localhost/exobuild-out-linux-arm-v7:latest'], 'E_EXPORT_FAILED', 'adding exobuild-out-linux-arm-v7 to the image index failed', false),
			run('export', undefined, [...storage(), 'manifest', 'push', '--all', '--format', 'oci', 'exobuild-out-list', 'oci:/exobuild/out/oci-layout:latest'], 'E_EXPORT_FAILED', 'writing the OCI layout failed (buildah manifest push)', false),
		],
	});
});

test('buildah: each flag becomes its buildah arguments', () => {
	const context = '/exobuild/context';
	const cases: Array<[string, Parameters<typeof request>[0], readonly string[], NodeJS.ProcessEnv?]> = [
		['-f', {file: 'ctx/Other.Dockerfile'}, [...buildHead().slice(0, -3), '/exobuild/dockerfile/Other.Dockerfile', '-t', 'exobuild-out-linux-ppc64le', context]],
		['--target', {target: 'final'}, [...buildHead(), '--target', 'final', context]],
		['--no-cache', {cache: false}, [...buildHead(), '--no-cache', context]],
		['--pull', {pull: true}, [...buildHead('linux/ppc64le', 'always'), context]],
		['--pull with a base from a layout', {pull: true, buildContext: ['base=oci-layout://layout']}, [...buildHead('linux/ppc64le', 'never'), context]],
		['--network none', {network: 'none'}, ['unshare', '--net', '--', ...buildHead(), context]],
		['--network host', {network: 'host'}, [...buildHead(), context]],
		['--shm-size', {shmSize: '64m'}, [...buildHead(), '--shm-size', '67108864', context]],
		['SOURCE_DATE_EPOCH', {}, [...buildHead(), '--timestamp', '1700000000', '--build-arg', 'SOURCE_DATE_EPOCH=1700000000', context], {SOURCE_DATE_EPOCH: '1700000000'}],
		['--build-arg', {buildArg: ['A=1', 'B=x=y']}, [...buildHead(), '--build-arg', 'A=1', '--build-arg', 'B=x=y', context]],
		['--label', {label: ['org.example.team=builds']}, [...buildHead(), '--label', 'org.example.team=builds', context]],
		['--annotation', {annotation: ['org.opencontainers.image.title=demo']}, [...buildHead(), '--annotation', 'org.opencontainers.image.title=demo', context]],
		['--annotation manifest:KEY', {annotation: ['manifest:org.example.m=1']}, [...buildHead(), '--annotation', 'org.example.m=1', context]],
		['--add-host', {addHost: ['db:10.0.0.5', 'v6=fd00::1']}, [...buildHead(), '--add-host', 'db:10.0.0.5', '--add-host', 'v6:fd00::1', context]],
		['--secret', {secret: ['id=token,src=token.txt', 'id=api,env=API_TOKEN']}, [...buildHead(), '--secret', 'id=token,src=/exobuild/secrets/token', '--secret', 'id=api,src=/run/exobuild-secrets/api', context], {API_TOKEN: 'x'}],
		['--ssh', {ssh: ['deploy=id_test']}, [...buildHead(), '--ssh', 'deploy=/exobuild/ssh/deploy', context]],
		['--ulimit', {ulimit: ['nofile=1024:2048', 'nproc=512']}, [...buildHead(), '--ulimit', 'nofile=1024:2048', '--ulimit', 'nproc=512', context]],
		['--build-context NAME=DIR', {buildContext: ['assets=assets']}, [...buildHead(), '--build-context', 'assets=/exobuild/local-contexts/0', context]],
		['-t (the host keeps tags)', {tag: ['demo:1']}, [...buildHead(), context]],
	];
	for (const [flag, raw, argv, env] of cases) {
		assert.deepEqual(buildArgv(request(raw, env)), argv, flag);
	}
});

test('buildah: secrets put its containers folder on a tmpfs; --shm-size sizes the sandbox\'s /dev/shm', () => {
	const withSecret = request({secret: ['id=token,src=token.txt']});
	assert.deepEqual(buildah.plan(withSecret, layoutFor(withSecret)).tmpfs, ['/exobuild/cache/buildah/overlay-containers']);
	const withShm = request({shmSize: '1g'});
	assert.equal(buildah.plan(withShm, layoutFor(withShm)).shmSize, 1024 ** 3);
	assert.equal(buildah.plan(request(), layoutFor(request())).shmSize, undefined);
});

test('buildah storage root: the project cache, --cache-to (also when the same as --cache-from), else the run\'s scratch', () => {
	const built = request();
	const rootOf = (cache: Parameters<typeof layoutFor>[1]): string => buildah.plan(built, layoutFor(built, cache)).steps[1]!.argv[2]!;
	assert.equal(rootOf({dir: sandboxPaths.cache}), '/exobuild/cache/buildah');
	assert.equal(rootOf({to: sandboxPaths.cacheTo}), '/exobuild/cache-to/buildah');
	assert.equal(rootOf({}), '/exobuild/state/containers');
	assert.throws(() => rootOf({from: sandboxPaths.cacheFrom}), /cannot read a cache it may not write/);
	assert.equal(rootOf({from: sandboxPaths.cacheFrom, to: sandboxPaths.cacheTo}), '/exobuild/cache-to/buildah', 'one folder as --cache-from and --cache-to: two mounts, the written one is the root');
	const same = request({cacheFrom: ['type=local,src=cache-in'], cacheTo: ['type=local,dest=cache-in']});
	assert.equal(buildah.refuse(same), undefined, 'one folder read and written is fine');
});

test('buildah refuses what it cannot do, each with the option, why, and the way out', () => {
	const hint = 'drop the option, or build with BuildKit: --engine buildkit with a builder image that has it (one made from Containerfile.builder)';
	const cases: Array<[Parameters<typeof request>[0], string]> = [
		[{progress: 'rawjson'}, '--progress rawjson: buildah has no machine-readable progress (BuildKit\'s rawjson needs --engine buildkit)'],
		[{cacheFilter: ['a']}, '--no-cache-filter: buildah cannot skip the cache for some stages only (use --no-cache, or --engine buildkit)'],
		[{sbom: 'true'}, '--sbom: buildah makes no SBOM attestations (use --engine buildkit)'],
		[{provenance: 'mode=max'}, '--provenance: buildah makes no provenance attestations (use --engine buildkit)'],
		[{annotation: ['index:org.example.i=1']}, '--annotation TYPE:KEY=VALUE: buildah puts annotations on each image manifest only: index, descriptor and per-platform annotations need --engine buildkit'],
		[{annotation: ['manifest[linux/ppc64le]:org.example.m=1']}, '--annotation TYPE:KEY=VALUE: buildah puts annotations on each image manifest only: index, descriptor and per-platform annotations need --engine buildkit'],
		[{cacheFrom: ['type=local,src=cache-in']}, '--cache-from: buildah keeps its cache as image storage, which it must write: --cache-from and --cache-to must name the same folder (or use --engine buildkit)'],
	];
	for (const [raw, message] of cases) {
		assert.deepEqual(buildah.refuse(request(raw)), {message, hint});
		assert.throws(() => request({...raw, engine: 'buildah'}), (error: unknown) => {
			assert.ok(isUserError(error));
			assert.equal(error.message, `${message} (--engine buildah)`);
			assert.equal(error.hint, hint);
			assert.equal(error.exitCode, 2);
			assert.equal(error.code, 'E_ENGINE_UNSUPPORTED');
			return true;
		});
	}

	assert.equal(buildah.refuse(request({progress: 'rawjson', sbom: 'true'}))!.message.split(':')[0], '--progress rawjson', 'the first unsupported option is named');
	assert.equal(request({engine: 'auto', sbom: 'true'}).engine, 'auto', 'auto is refused once the engine is known');
});

test('buildah warns once about bases without history, naming them and why', () => {
	const bases = [
		{name: 'base', platform: 'linux/s390x', historyEntries: 0},
		{name: 'base', platform: 'linux/arm/v7', historyEntries: 0},
		{name: 'tools', platform: 'linux/s390x', historyEntries: 3},
	];
	assert.deepEqual(buildah.warnings(request(), bases), [
		'buildah\'s layer cache cannot match steps on base base: its image config has no history, which buildah compares to find a cached step, so every step runs again on each build; build with BuildKit (--engine buildkit), or use a base whose config has a history entry per layer',
	]);
	assert.deepEqual(buildah.warnings(request(), [...bases, {name: 'other', platform: 'linux/s390x', historyEntries: 0}]), [
		'buildah\'s layer cache cannot match steps on bases base, other: their image configs have no history, which buildah compares to find a cached step, so every step runs again on each build; build with BuildKit (--engine buildkit), or use a base whose config has a history entry per layer',
	]);
	assert.deepEqual(buildah.warnings(request(), [bases[2]!]), []);
});

test('chooseEngine: BuildKit wherever the builder has it; a missing engine asked for by name is exit 2 with a hint', () => {
	assert.equal(chooseEngine('auto', ['buildkit', 'buildah']), 'buildkit');
	assert.equal(chooseEngine('auto', ['buildah', 'buildkit']), 'buildkit');
	assert.equal(chooseEngine('auto', ['buildah']), 'buildah');
	assert.equal(chooseEngine('buildah', ['buildkit', 'buildah']), 'buildah');
	assert.equal(chooseEngine('buildkit', ['buildkit']), 'buildkit');
	const refused = (run: () => unknown, message: string, hint: RegExp): void => {
		assert.throws(run, (error: unknown) => {
			assert.ok(isUserError(error));
			assert.equal(error.message, message);
			assert.match(error.hint ?? '', hint);
			assert.equal(error.exitCode, 2);
			assert.equal(error.code, 'E_ENGINE_MISSING');
			return true;
		});
	};

	refused(() => chooseEngine('buildkit', ['buildah'], 'the builder image exobuild-builder:abc'), '--engine buildkit: the builder image exobuild-builder:abc has no BuildKit (it has buildah)', /^drop --engine buildkit/);
	refused(() => chooseEngine('buildah', ['buildkit']), '--engine buildah: the builder image has no buildah (it has buildkit)', /^drop --engine buildah/);
	refused(() => chooseEngine('auto', []), 'the builder image has neither BuildKit nor buildah', /exobuild builder build/);
});

test('buildah step parser: the tracker of a buildah build', () => {
	let now = 0;
	const tracker = new StepTracker({engine: 'buildah', now: () => now});
	tracker.onLine('linux/s390x', 'STEP 1/2: FROM base');
	now = 40;
	assert.deepEqual(tracker.onLine('linux/s390x', 'COMMIT exobuild-out-linux-s390x').map(({state, step}) => `${state} ${step.name}`), ['done [linux/s390x 1/2] FROM base']);
	assert.equal(tracker.steps[0]!.ms, 40);
});

test('base facts: the history entries of an image config, none when it has no history', () => {
	assert.deepEqual(baseFactsOf('base', 'linux/s390x', {architecture: 's390x', os: 'linux', rootfs: {type: 'layers', diff_ids: []}, history: [{created_by: 'a'}, {empty_layer: true}]}), {name: 'base', platform: 'linux/s390x', historyEntries: 2});
	assert.equal(baseFactsOf('base', 'linux/s390x', {architecture: 's390x', os: 'linux'}).historyEntries, 0);
	assert.equal(baseFactsOf('base', 'linux/s390x', {history: null}).historyEntries, 0);
	assert.equal(baseFactsOf('base', 'linux/s390x', 'not a config').historyEntries, 0);
	assert.deepEqual(buildah.warnings(request(), [baseFactsOf('base', 'linux/s390x', {os: 'linux'})]).length, 1);
});
