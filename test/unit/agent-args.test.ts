import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {agentArgs, buildMounts, sandboxLayout, stepArgs} from '../../src/agent/agent-args.js';
import {exobuildVersion, stampAgentVersion, unstampedVersionLine} from '../../src/agent/agent-version.js';
import type {EnginePlan} from '../../src/engines/plan.js';
import {toBuildRequest, type RawBuildOptions} from '../../src/cli/build-flags/options.js';
import {handlerSpec, parsePlatform} from '../../src/platforms/parse.js';
import {vmImageDir} from '../../src/paths.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-agent-args-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));
const context = path.join(root, 'ctx');
fs.mkdirSync(context);
fs.writeFileSync(path.join(context, 'Dockerfile.web'), 'FROM scratch\n');
fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM scratch\n');
fs.writeFileSync(path.join(root, 'id_key'), '-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n');
fs.writeFileSync(path.join(root, 'token'), 'secret');
const layoutDir = path.join(root, 'layout');
fs.mkdirSync(layoutDir);
fs.writeFileSync(path.join(layoutDir, 'index.json'), '{}');
fs.writeFileSync(path.join(layoutDir, 'oci-layout'), '{}');
const shared = path.join(root, 'shared');
fs.mkdirSync(shared);

const raw = (overrides: Partial<RawBuildOptions> = {}): RawBuildOptions => ({
	platform: [], tag: [], buildArg: [], cache: true, buildContext: [], output: [], progress: 'auto', engine: 'auto', driver: 'linux-userns', ...overrides,
});
const env = {cwd: root, env: {TOKEN: 'x'}, warn() {}};

const ppc = parsePlatform('linux/ppc64le');
const arm = parsePlatform('linux/arm64');
const digest = `sha256:${'b'.repeat(64)}`;

test('agentArgs: the agent options, then every step of the plan, complete and in order', () => {
	const plan: EnginePlan = {
		engine: 'buildkit',
		tmpfs: ['/exobuild/cache/buildah/overlay-containers'],
		shmSize: 134_217_728,
		steps: [
			{kind: 'daemon', argv: ['buildkitd', '--addr', 'unix:///run/buildkit/buildkitd.sock'], rootlessArgs: ['--rootless']},
			{kind: 'ready', argv: ['buildctl', 'debug', 'workers'], timeoutMs: 60_000},
			{kind: 'version', argv: ['buildkitd', '--version']},
			{kind: 'platforms', argv: ['buildctl', 'debug', 'workers', '--format', '{{json .}}'], expect: [{platform: 'linux/ppc64le', text: '"architecture":"ppc64le"'}, {platform: 'linux/arm64', text: '"architecture":"arm64"'}]},
			{kind: 'run', phase: 'build', argv: ['buildctl', 'build', '--opt', 'build-arg:MSG=two words', ''], errorCode: 'E_BUILD_FAILED', message: 'the build failed', watch: true},
			{kind: 'run', phase: 'base-images', platform: 'linux/arm64', argv: ['buildah', 'rmi', 'x'], errorCode: 'E_BASE_IMAGE', message: '', watch: false, mayFail: true},
		],
	};
	assert.deepEqual(agentArgs([ppc, arm], plan, {hangTimeoutSeconds: 600, secretsFromStdin: 2, debug: true}), [
		'build', '--engine', 'buildkit',
		'--platform', 'linux/ppc64le', '--handler', `linux/ppc64le=${handlerSpec(ppc.arch)}:ppc64le`,
		'--platform', 'linux/arm64', '--handler', `linux/arm64=${handlerSpec(arm.arch)}:aarch64`,
		'--state-dir', '/exobuild/state', '--output', '/exobuild/out/oci-layout', '--daemon-log', '/exobuild/out/engine-daemon.log',
		'--hang-timeout', '600', '--secrets-stdin', '2', '--tmpfs', '/exobuild/cache/buildah/overlay-containers', '--shm-size', '134217728', '--debug',
		'--step', 'daemon', 'engine-start', '-', '-', '-', '-', '3', 'buildkitd', '--addr', 'unix:///run/buildkit/buildkitd.sock', '1', '--rootless',
		'--step', 'ready', 'engine-start', '-', '-', '-', 'timeout-ms=60000', '3', 'buildctl', 'debug', 'workers', '0',
		'--step', 'version', 'engine-start', '-', '-', '-', '-', '2', 'buildkitd', '--version', '0',
		'--step', 'platforms', 'platform-check', '-', '-', '-', '-', '5', 'buildctl', 'debug', 'workers', '--format', '{{json .}}', '4', 'linux/ppc64le', '"architecture":"ppc64le"', 'linux/arm64', '"architecture":"arm64"',
		'--step', 'run', 'build', '-', 'E_BUILD_FAILED', 'the build failed', 'watch', '5', 'buildctl', 'build', '--opt', 'build-arg:MSG=two words', '', '0',
		'--step', 'run', 'base-images', 'linux/arm64', 'E_BASE_IMAGE', '-', 'may-fail', '3', 'buildah', 'rmi', 'x', '0',
	]);
	// Without the optional parts: no options for them.
	assert.deepEqual(agentArgs([ppc], {engine: 'buildah', tmpfs: [], steps: [{kind: 'version', argv: ['buildah', '--version']}]}, {hangTimeoutSeconds: 0, secretsFromStdin: 0, debug: false, stateDir: '/s', outputLayout: '/o', daemonLog: '/d'}), [
		'build', '--engine', 'buildah', '--platform', 'linux/ppc64le', '--handler', `linux/ppc64le=${handlerSpec(ppc.arch)}:ppc64le`,
		'--state-dir', '/s', '--output', '/o', '--daemon-log', '/d', '--step', 'version', 'engine-start', '-', '-', '-', '-', '2', 'buildah', '--version', '0',
	]);
});

test('stepArgs refuses what the agent could not carry: an empty argv, a NUL byte, a multi-line platform text, a bad timeout', () => {
	assert.throws(() => stepArgs({kind: 'version', argv: []}), /empty argv/);
	assert.throws(() => stepArgs({kind: 'version', argv: ['a\0b']}), /NUL/);
	assert.throws(() => stepArgs({kind: 'platforms', argv: ['x'], expect: [{platform: 'linux/s390x', text: 'a\nb'}]}), /one non-empty line/);
	assert.throws(() => stepArgs({kind: 'ready', argv: ['x'], timeoutMs: 0}), /positive/);
});

test('sandboxLayout names the sandbox paths of exactly the mounts buildMounts makes', () => {
	const request = toBuildRequest('ctx', raw({
		platform: ['linux/ppc64le,linux/arm64'], file: path.join(context, 'Dockerfile.web'), buildContext: [`base=oci-layout://${layoutDir}`, `assets=${shared}`],
		secret: [`id=file,src=${path.join(root, 'token')}`, 'id=env,env=TOKEN'], ssh: [`key=${path.join(root, 'id_key')}`],
	}), env);
	const contexts = [{name: 'base', layoutDir, topDigest: digest}];
	const cache = {from: path.join(root, 'cf'), to: path.join(root, 'ct')};
	const layout = sandboxLayout(request, contexts, cache);
	assert.deepEqual({...layout, secretFiles: [...layout.secretFiles], sshSources: [...layout.sshSources], localContexts: [...layout.localContexts], bases: layout.bases.map(base => ({...base, views: [...base.views]}))}, {
		context: '/exobuild/context',
		dockerfile: '/exobuild/dockerfile/Dockerfile.web',
		outputLayout: '/exobuild/out/oci-layout',
		state: '/exobuild/state',
		cache: {from: '/exobuild/cache-from', to: '/exobuild/cache-to'},
		secretFiles: [['file', '/exobuild/secrets/file'], ['env', '/run/exobuild-secrets/env']],
		sshSources: [['key', '/exobuild/ssh/key']],
		localContexts: [['assets', '/exobuild/local-contexts/0']],
		bases: [{name: 'base', layout: '/exobuild/contexts/0', topDigest: digest, views: [['linux/ppc64le', '/exobuild/views/0/linux-ppc64le'], ['linux/arm64', '/exobuild/views/0/linux-arm64']]}],
	});
	const mounted = new Set(buildMounts(request, contexts, {outDir: '/scratch/out', viewsDir: '/scratch/views'}, cache, new Map([['file', path.join(root, 'token')]])).map(mount => mount.sandboxPath));
	// Every path of the layout is a mount, or lies below one (the Dockerfile, the views, the output), or is the agent's own (state, env= secrets).
	const below = (target: string): boolean => [...mounted].some(mount => target === mount || target.startsWith(`${mount}/`));
	for (const target of [layout.context, layout.dockerfile, layout.outputLayout, layout.cache.from!, layout.cache.to!, layout.secretFiles.get('file')!, layout.sshSources.get('key')!, layout.localContexts.get('assets')!, layout.bases[0]!.layout, ...layout.bases[0]!.views.values()]) {
		assert.ok(below(target), `${target} is mounted`);
	}

	assert.equal(below(layout.secretFiles.get('env')!), false, 'an env= secret is never a mounted host file');
});

test('the agent\'s version is stamped from package.json by the builder recipe', () => {
	const script = fs.readFileSync(path.join(vmImageDir, 'exobuild-agent'), 'utf8');
	assert.equal(script.split('\n').filter(line => line.startsWith('AGENT_VERSION=')).length, 1, 'one version line');
	const version = (JSON.parse(fs.readFileSync(path.join(vmImageDir, '..', 'package.json'), 'utf8')) as {version: string}).version;
	assert.equal(exobuildVersion, version);
	const stamped = stampAgentVersion(script);
	assert.ok(stamped.includes(`\nAGENT_VERSION=${version}\n`));
	assert.equal(stamped.replace(`AGENT_VERSION=${version}`, unstampedVersionLine), script, 'nothing else changes');
	assert.throws(() => stampAgentVersion(stamped), /exactly once/);
	assert.throws(() => stampAgentVersion(script, '1.0; rm -rf /'));
});
