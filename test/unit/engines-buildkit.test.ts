/** BuildKit's engine module: the complete command line of every step for every flag, its refusals. */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {sandboxPaths} from '../../src/agent/agent-args.js';
import {refuseForEngine} from '../../src/cli/build-flags/options.js';
import {engines} from '../../src/engines/index.js';
import {isUserError} from '../../src/errors.js';
import {StepTracker} from '../../src/progress/steps.js';
import {digest, layoutFor, request, root} from './engines-fixtures.js';

const buildkit = engines.buildkit;
const addr = 'unix:///run/buildkit/buildkitd.sock';
const buildctl = ['buildctl', '--addr', addr];
/** What every build starts with: the context, the Dockerfile, the platforms. */
const head = (platforms = 'linux/ppc64le', file = 'Dockerfile'): string[] => [
	...buildctl, 'build', '--frontend', 'dockerfile.v0', '--local', 'context=/exobuild/context', '--local', 'dockerfile=/exobuild/dockerfile',
	'--opt', `filename=${file}`, '--opt', `platform=${platforms}`,
];
/** …and ends with: the project cache, the OCI layout, plain progress, the metadata file. */
const tail = (output = 'type=oci,tar=false,dest=/exobuild/out/oci-layout', progress = 'plain'): string[] => [
	'--import-cache', 'type=local,src=/exobuild/cache/buildkit', '--export-cache', 'type=local,mode=max,dest=/exobuild/cache/buildkit',
	'--output', output, '--progress', progress, '--metadata-file', '/exobuild/state/metadata.json',
];

const buildArgv = (built = request()): readonly string[] => {
	const run = buildkit.plan(built, layoutFor(built)).steps.at(-1)!;
	assert.equal(run.kind, 'run');
	return run.argv;
};

test('BuildKit plan: daemon, readiness, version, platforms, one build, each with its whole argv', () => {
	const built = request({platform: ['linux/ppc64le,linux/s390x,linux/arm/v7']});
	const plan = buildkit.plan(built, layoutFor(built));
	assert.deepEqual(plan, {
		engine: 'buildkit',
		tmpfs: [],
		steps: [
			{
				kind: 'daemon',
				argv: ['buildkitd', '--addr', addr, '--root', '/exobuild/state/buildkit', '--oci-worker=true', '--containerd-worker=false', '--config', '/etc/buildkit/buildkitd.toml'],
				rootlessArgs: ['--rootless'],
			},
			{kind: 'ready', argv: [...buildctl, 'debug', 'workers'], timeoutMs: 60_000},
			{kind: 'version', argv: ['buildkitd', '--version']},
			{
				kind: 'platforms',
				argv: [...buildctl, 'debug', 'workers', '--format', '{{json .}}'],
				expect: [
					{platform: 'linux/ppc64le', text: '"architecture":"ppc64le"'},
					{platform: 'linux/s390x', text: '"architecture":"s390x"'},
					{platform: 'linux/arm/v7', text: '"architecture":"arm"'},
				],
			},
			{
				kind: 'run', phase: 'build', errorCode: 'E_BUILD_FAILED', message: 'the build failed (buildctl)', watch: true,
				argv: [...head('linux/ppc64le,linux/s390x,linux/arm/v7'), ...tail()],
			},
		],
	});
});

test('BuildKit: each flag becomes its buildctl arguments', () => {
	const cases: Array<[string, Parameters<typeof request>[0], readonly string[], NodeJS.ProcessEnv?]> = [
		['-f', {file: 'ctx/Other.Dockerfile'}, [...head('linux/ppc64le', 'Other.Dockerfile'), ...tail()]],
		['--target', {target: 'final'}, [...head(), '--opt', 'target=final', ...tail()]],
		['--no-cache', {cache: false}, [...head(), '--no-cache', ...tail()]],
		['--no-cache-filter', {cacheFilter: ['a,b', 'c']}, [...head(), '--opt', 'no-cache=a,b,c', ...tail()]],
		['--pull', {pull: true}, [...head(), '--opt', 'image-resolve-mode=pull', ...tail()]],
		['--network none', {network: 'none'}, [...head(), '--opt', 'force-network-mode=none', ...tail()]],
		['--network host', {network: 'host'}, [...head(), '--opt', 'force-network-mode=host', '--allow', 'network.host', ...tail()]],
		['--shm-size', {shmSize: '64m'}, [...head(), '--opt', 'shm-size=67108864', ...tail()]],
		['--provenance=true', {provenance: 'true'}, [...head(), '--opt', 'attest:provenance=mode=min', ...tail()]],
		['--provenance mode=max', {provenance: 'mode=max'}, [...head(), '--opt', 'attest:provenance=mode=max', ...tail()]],
		['--provenance=false', {provenance: 'false'}, [...head(), ...tail()]],
		['--sbom=false', {sbom: 'false'}, [...head(), ...tail()]],
		['SOURCE_DATE_EPOCH', {}, [...head(), '--opt', 'build-arg:SOURCE_DATE_EPOCH=1700000000', ...tail('type=oci,tar=false,dest=/exobuild/out/oci-layout,rewrite-timestamp=true')], {SOURCE_DATE_EPOCH: '1700000000'}],
		['--add-host', {addHost: ['db:10.0.0.5', 'v6=fd00::1']}, [...head(), '--opt', 'add-hosts=db=10.0.0.5,v6=fd00::1', ...tail()]],
		['--ulimit', {ulimit: ['nofile=1024:2048', 'nproc=512']}, [...head(), '--opt', 'ulimit=nofile=1024:2048,nproc=512', ...tail()]],
		['--build-arg', {buildArg: ['A=1', 'B=x=y', 'FROM_ENV']}, [...head(), '--opt', 'build-arg:A=1', '--opt', 'build-arg:B=x=y', '--opt', 'build-arg:FROM_ENV=env value', ...tail()], {FROM_ENV: 'env value'}],
		['--label', {label: ['org.example.team=builds', 'note=a,b']}, [...head(), '--opt', 'label:org.example.team=builds', '--opt', 'label:note=a,b', ...tail()]],
		['--annotation', {annotation: ['org.opencontainers.image.title=demo', 'note=a,"b"']}, [...head(), ...tail('type=oci,tar=false,dest=/exobuild/out/oci-layout,annotation.org.opencontainers.image.title=demo,"annotation.note=a,""b"""')]],
		['--annotation TYPE[PLATFORM]:KEY (buildx)', {annotation: ['index:org.example.index=i', 'manifest:m=1', 'manifest-descriptor[linux/ppc64le]:d=2', 'index-descriptor,index:both=3']},
			[...head(), ...tail('type=oci,tar=false,dest=/exobuild/out/oci-layout,annotation-index.org.example.index=i,annotation.m=1,annotation-manifest-descriptor[linux/ppc64le].d=2,annotation-index-descriptor.both=3,annotation-index.both=3')]],
		['--secret src= and env=', {secret: ['id=token,src=token.txt', 'id=api,env=API_TOKEN']}, [...head(), '--secret', 'id=token,src=/exobuild/secrets/token', '--secret', 'id=api,src=/run/exobuild-secrets/api', ...tail()], {API_TOKEN: 'x'}],
		['--ssh', {ssh: ['default', 'deploy=id_test']}, [...head(), '--ssh', 'default=/exobuild/ssh/default', '--ssh', 'deploy=/exobuild/ssh/deploy', ...tail()], {SSH_AUTH_SOCK: `${root}/id_test`}],
		['--build-context NAME=DIR', {buildContext: ['assets=assets']}, [...head(), '--local', 'assets=/exobuild/local-contexts/0', '--opt', 'context:assets=local:assets', ...tail()]],
		['--build-context NAME=oci-layout://DIR', {buildContext: ['base=oci-layout://layout', 'tools=oci-layout://layout']}, [...head(), '--oci-layout', 'base0=/exobuild/contexts/0', '--opt', `context:base=oci-layout://base0@${digest}`, '--oci-layout', 'base1=/exobuild/contexts/1', '--opt', `context:tools=oci-layout://base1@${digest}`, ...tail()]],
		['--progress rawjson', {progress: 'rawjson'}, [...head(), ...tail(undefined, 'rawjson')]],
		['-t (the host keeps tags)', {tag: ['demo:1']}, [...head(), ...tail()]],
	];
	for (const [flag, raw, argv, env] of cases) {
		assert.deepEqual(buildArgv(request(raw, env)), argv, flag);
	}
});

test('BuildKit --network host also lets buildkitd grant it', () => {
	const built = request({network: 'host'});
	const daemon = buildkit.plan(built, layoutFor(built)).steps[0]!;
	assert.deepEqual(daemon.argv, ['buildkitd', '--addr', addr, '--root', '/exobuild/state/buildkit', '--oci-worker=true', '--containerd-worker=false', '--config', '/etc/buildkit/buildkitd.toml', '--allow-insecure-entitlement', 'network.host']);
});

test('BuildKit cache: the project cache, --cache-from/--cache-to folders, and a folder with nothing to import', () => {
	const built = request();
	const argvWith = (cache: Parameters<typeof layoutFor>[1]): readonly string[] => buildkit.plan(built, layoutFor(built, cache)).steps.at(-1)!.argv;
	const end = ['--output', 'type=oci,tar=false,dest=/exobuild/out/oci-layout', '--progress', 'plain', '--metadata-file', '/exobuild/state/metadata.json'];
	assert.deepEqual(argvWith({from: sandboxPaths.cacheFrom, to: sandboxPaths.cacheTo}), [...head(), '--import-cache', 'type=local,src=/exobuild/cache-from', '--export-cache', 'type=local,mode=max,dest=/exobuild/cache-to', ...end]);
	assert.deepEqual(argvWith({from: sandboxPaths.cacheFrom}), [...head(), '--import-cache', 'type=local,src=/exobuild/cache-from', ...end]);
	assert.deepEqual(argvWith({to: sandboxPaths.cacheTo}), [...head(), '--export-cache', 'type=local,mode=max,dest=/exobuild/cache-to', ...end]);
	assert.deepEqual(argvWith({dir: sandboxPaths.cache, importable: false}), [...head(), '--export-cache', 'type=local,mode=max,dest=/exobuild/cache/buildkit', ...end], 'no import of a cache not written yet (BuildKit would log a warning)');
	assert.deepEqual(argvWith({}), [...head(), ...end]);
	const fromFlags = request({cacheFrom: ['type=local,src=cache-in'], cacheTo: ['type=local,dest=cache-out,mode=max']});
	assert.deepEqual(fromFlags.cache, {kind: 'local', from: `${root}/cache-in`, to: `${root}/cache-out`});
	assert.equal(buildkit.refuse(fromFlags), undefined, 'BuildKit reads one folder and writes another');
});

test('BuildKit refuses --sbom (its scanner image needs a registry) and nothing else', () => {
	const refusal = buildkit.refuse(request({sbom: 'true'}));
	assert.deepEqual(refusal, {
		message: '--sbom: BuildKit makes SBOMs by running the docker/buildkit-syft-scanner image, which it must pull from a registry: exobuild builds offline',
		hint: 'drop --sbom and scan the exported image instead (e.g. `syft oci-dir:DIR`); --provenance works offline',
	});
	assert.throws(() => buildkit.plan(request({sbom: 'true'}), layoutFor(request())), /asked for what it refuses/);
	const everything = request({
		progress: 'rawjson', cacheFilter: ['a'], provenance: 'mode=max', cacheFrom: ['type=local,src=cache-in'], target: 'final', cache: false, pull: true,
		network: 'host', addHost: ['db:10.0.0.5'], secret: ['id=token,src=token.txt'], shmSize: '1g', ulimit: ['nofile=10'], label: ['a=b'],
		annotation: ['a=b'], buildArg: ['A=1'], buildContext: ['assets=assets', 'base=oci-layout://layout'],
	}, {SOURCE_DATE_EPOCH: '1'});
	assert.equal(buildkit.refuse(everything), undefined);
	assert.throws(() => request({engine: 'buildkit', sbom: 'true'}), (error: unknown) => {
		assert.ok(isUserError(error));
		assert.equal(error.exitCode, 2);
		assert.equal(error.code, 'E_ENGINE_UNSUPPORTED');
		assert.equal(error.message, `${refusal!.message} (--engine buildkit)`);
		assert.equal(error.hint, refusal!.hint);
		return true;
	});
	assert.throws(() => refuseForEngine(request({sbom: 'true'}), 'buildkit', 'the builder has BuildKit'), /\(the builder has BuildKit\)$/);
});

test('BuildKit warns of nothing about bases without history: its cache is keyed by content', () => {
	assert.deepEqual(buildkit.warnings(request(), [{name: 'base', platform: 'linux/ppc64le', historyEntries: 0}]), []);
});

test('BuildKit step parser: plain progress vertices (the tracker of a BuildKit build)', () => {
	const tracker = new StepTracker({engine: 'buildkit', now: () => 0});
	assert.deepEqual(tracker.onLine(undefined, '#7 [linux/s390x 1/2] FROM base').map(({state, step}) => `${state} ${step.name} ${step.platform}`), ['start [linux/s390x 1/2] FROM base linux/s390x']);
	assert.deepEqual(tracker.onLine(undefined, '#7 DONE 0.1s').map(({state}) => state), ['done']);
	assert.equal(tracker.steps[0]!.ms, 100);
});

test('--annotation with an unknown TYPE: is refused while the flags are read (exit 2), whichever the engine', () => {
	for (const annotation of ['indx:k=v', 'manifest[linux/ppc64le:k=v', 'index:=v']) {
		assert.throws(() => request({annotation: [annotation]}), (error: unknown) => {
			assert.ok(isUserError(error), annotation);
			assert.equal(error.exitCode, 2);
			assert.match(error.message, /^invalid --annotation /);
			return true;
		}, annotation);
	}
});
