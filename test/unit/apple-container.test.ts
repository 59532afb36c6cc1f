/**
 * The apple-container driver's pure parts: the `container run` command line, the JSON shapes of
 * 1.x and pre-1.0 output, version parsing and gates, default VM resources; and the option
 * checks that refuse what a driver cannot do, before anything starts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';
import * as tar from 'tar';
import {inspectArchive, LayoutWriter, packLayoutToArchive} from '../../src/oci/index.js';
import {isUserError} from '../../src/errors.js';
import {atLeast, parseVersion} from '../../src/sandboxes/apple-container/container-cli.js';
import {createAppleContainerDriver, defaultResources, minimumVersion} from '../../src/sandboxes/apple-container/index.js';
import {splitArchiveByPlatform} from '../../src/sandboxes/apple-container/per-platform.js';
import {containerRunArgs, labelArg, validContainerName, vmLabels, type VmRun} from '../../src/sandboxes/apple-container/run-args.js';
import {
	parseContainerList, parseImageInspect, parseImageList, parseLoadOutput, parseSystemStatus, parseVolumeList, versionList,
} from '../../src/sandboxes/apple-container/shapes.js';
import {stateVolumeCreateArgs, stateVolumesUnavailable} from '../../src/sandboxes/apple-container/state-volumes.js';
import {createDriver} from '../../src/sandboxes/index.js';

const fixtures = fileURLToPath(new URL('../../../test/fixtures/apple-container/', import.meta.url));
const fixture = (version: string, name: string): string => fs.readFileSync(path.join(fixtures, version, name), 'utf8');
const fixtureJson = (version: string, name: string): unknown => JSON.parse(fixture(version, name));

const run: VmRun = {
	name: 'exobuild-exo-1', sessionId: 'exo-1', ownerPid: 42, ownerStart: '123', image: 'exobuild-builder:distro-0123456789ab', platform: 'linux/arm64',
	mounts: [{hostPath: '/src/app', sandboxPath: '/exobuild/context', readOnly: true}, {hostPath: '/tmp/out', sandboxPath: '/exobuild/out', readOnly: false}],
	env: {}, agentArgs: ['build', '--platform', 'linux/ppc64le'], cpus: 4, memory: '8G', virtualization: false, rosetta: false, writableProcSys: false,
};

test('container run: --rm, a unique name, owner labels, --cap-add ALL (no --privileged), resources, ro/rw shares, the agent as entrypoint', () => {
	const args = containerRunArgs(run);
	assert.deepEqual(args, [
		'run', '--rm', '--name', 'exobuild-exo-1',
		'--label', `${vmLabels.session}=exo-1`, '--label', `${vmLabels.ownerPid}=42`, '--label', `${vmLabels.ownerStart}=123`,
		'--platform', 'linux/arm64', '--cap-add', 'ALL', '--cpus', '4', '--memory', '8G',
		'--volume', '/src/app:/exobuild/context:ro', '--volume', '/tmp/out:/exobuild/out',
		'--entrypoint', '/usr/local/bin/exobuild-agent', 'exobuild-builder:distro-0123456789ab', 'build', '--platform', 'linux/ppc64le',
	]);
	assert.ok(!args.includes('--privileged'));
	assert.ok(!args.includes('--virtualization'), 'only when asked for');
	const asked = containerRunArgs({...run, virtualization: true, rosetta: true, writableProcSys: true});
	for (const flag of ['--virtualization', '--rosetta']) {
		assert.ok(asked.indexOf(flag) < asked.indexOf('exobuild-builder:distro-0123456789ab'), `${flag} before the image`);
	}

	assert.deepEqual(asked.slice(asked.indexOf('--read-only-path'), asked.indexOf('--read-only-path') + 2), ['--read-only-path', 'NONE']);
	assert.throws(() => containerRunArgs({...run, mounts: [{hostPath: '/a:b', sandboxPath: '/exobuild/context', readOnly: true}]}), (error: unknown) => isUserError(error) && /no escape for ':'/.test(error.message));
});

test('labels: lowercase dotted keys, no \'=\' in values (Parser.labels splits with maxSplits: 2); names at most 63 characters', () => {
	assert.equal(labelArg(vmLabels.ownerStart, 'Thu Dec 3 03:04:11 2026'), 'dev.exobuild.owner-start=Thu Dec 3 03:04:11 2026');
	for (const [key, value] of [[vmLabels.session, 'a=b'], ['Dev.Exobuild.session', 'x'], ['dev_exobuild', 'x'], ['dev..exobuild', 'x']] as const) {
		assert.throws(() => labelArg(key, value), (error: unknown) => isUserError(error) && /lowercase dotted keys and values without '='/.test(error.message), `${key}=${value}`);
	}

	assert.throws(() => containerRunArgs({...run, sessionId: 'exo=1'}), /values without '='/);
	assert.equal(validContainerName(`exobuild-${'a'.repeat(54)}`), true);
	assert.equal(validContainerName(`exobuild-${'a'.repeat(55)}`), false, '64 characters');
	assert.throws(() => containerRunArgs({...run, name: `exobuild-${'a'.repeat(55)}`}), /at most 63 characters/);
	assert.throws(() => containerRunArgs({...run, name: '-exobuild'}), /at most 63 characters/);
});

test('system status JSON: flat up to 1.2.2, nested in 1.4.1 ({status} alone when stopped); each era refuses the other\'s shape', () => {
	const running122 = parseSystemStatus(fixtureJson('1.2.2', 'system-status.running.json'), [1, 2, 2]);
	assert.deepEqual(running122.data, {status: 'running', serverVersion: '1.2.2 (build: release, commit: af405ff)'});
	assert.deepEqual(parseSystemStatus(fixtureJson('1.2.2', 'system-status.stopped.json'), [1, 2, 2]).data, {status: 'not running', serverVersion: undefined});
	assert.equal(parseSystemStatus(fixtureJson('0.12.3', 'system-status.running.json'), [0, 12, 3]).data?.status, 'running');
	assert.equal(parseSystemStatus(fixtureJson('0.12.3', 'system-status.stopped.json'), [0, 12, 3]).data?.status, 'unregistered');
	assert.deepEqual(parseSystemStatus(fixtureJson('1.4.1', 'system-status.running.json'), [1, 4, 1]).data, {status: 'running', serverVersion: '1.4.1'});
	assert.deepEqual(parseSystemStatus(fixtureJson('1.4.1', 'system-status.stopped.json'), [1, 4, 1]).data, {status: 'not running', serverVersion: undefined});
	assert.equal(parseSystemStatus(fixtureJson('1.4.1', 'system-status.running.json'), [1, 2, 2]).success, false, 'nested is not 1.2.2');
	assert.equal(parseSystemStatus(fixtureJson('1.2.2', 'system-status.running.json'), [1, 4, 1]).success, false, 'flat is not 1.4.1');
	assert.equal(parseSystemStatus(fixtureJson('1.4.1', 'system-status.running.json'), [1, 3, 1]).success, true, '1.3.x: either');
	assert.equal(parseSystemStatus(fixtureJson('1.2.2', 'system-status.running.json'), [1, 3, 1]).success, true, '1.3.x: either');
});

test('versions: system version JSON (the CLI\'s element, not the apiserver\'s line), --version, git-describe suffixes', () => {
	const cli = versionList.parse(fixtureJson('1.2.2', 'system-version.json')).find(entry => entry.appName === 'container');
	assert.deepEqual(parseVersion(cli!.version), [1, 2, 0], '1.2.0-4-g1275b70 counts as 1.2.0');
	assert.deepEqual(parseVersion(versionList.parse(fixtureJson('0.12.3', 'system-version.json'))[0]!.version), [0, 12, 3]);
	assert.deepEqual(parseVersion(fixture('0.12.3', 'cli-version.txt')), [0, 12, 3]);
	assert.deepEqual(parseVersion(fixture('1.2.2', 'cli-version.txt')), [1, 2, 0]);
	assert.deepEqual(parseVersion('v1.2.2'), [1, 2, 2]);
	assert.equal(parseVersion('af405ff'), undefined, 'git describe --always without a tag');
	assert.equal(parseVersion('0.0.0'), undefined, 'a build without RELEASE_VERSION');
	assert.equal(parseVersion('1.2.2.4'), undefined);
});

test('image JSON: 1.x reads configuration.name (no top-level name, labels or index); 0.12 list is {reference, fullSize, descriptor}', () => {
	const v1 = fixtureJson('1.2.2', 'image-list.json') as Array<Record<string, unknown>>;
	assert.equal(v1[0]!['name'], undefined, 'the fixture follows ImageResource.swift: no top-level name');
	assert.deepEqual(parseImageList(v1, [1, 2, 2]), [{name: 'docker.io/library/alpine:3.22', indexDigest: 'sha256:4bcff63911fcb4448bd4fdacec207030997caf25e9bea4045fa6c8c44de311d1', platforms: ['linux/arm64/v8']}]);
	assert.deepEqual(parseImageInspect(fixtureJson('1.2.2', 'image-inspect.json'), [1, 0, 0]), parseImageList(v1, [1, 2, 2]), 'inspect prints the same, pretty');
	assert.deepEqual(parseImageList(fixtureJson('0.12.3', 'image-list.json'), [0, 12, 3]).map(entry => entry.name), ['docker.io/library/alpine:3.22']);
	assert.deepEqual(parseImageInspect(fixtureJson('0.12.3', 'image-inspect.json'), [0, 12, 3])[0]?.platforms, ['linux/arm64/v8']);
	assert.throws(() => parseImageList(fixtureJson('0.12.3', 'image-list.json'), [1, 2, 2]), '0.12 shape under 1.x');
	assert.throws(() => parseImageList([{name: 'n1', labels: {}, index: {}}], [1, 2, 2]), 'the old guess of the 1.x shape');
});

test('image load output: 1.x prints the references only, 0.x a "Loaded images:" header first', () => {
	const references = ['docker.io/library/alpine:3.22', 'exobuild-builder:containerfile-0123456789ab'];
	assert.deepEqual(parseLoadOutput(fixture('1.2.2', 'image-load.txt'), [1, 2, 2]), references);
	assert.deepEqual(parseLoadOutput(fixture('0.12.3', 'image-load.txt'), [0, 12, 3]), references);
	assert.deepEqual(parseLoadOutput(fixture('0.12.3', 'image-load.txt'), [1, 0, 0]), ['Loaded images:', ...references], 'the header is no reference, and 1.x has none');
});

test('container list JSON: capAdd in configuration; states unknown|stopped|running|stopping; 0.12 puts the state at the top', () => {
	const v1 = parseContainerList(fixtureJson('1.2.2', 'container-list.json'), [1, 2, 2]);
	assert.deepEqual(v1.map(entry => [entry.id, entry.state, entry.capAdd]), [['exobuild-exo-1', 'running', ['ALL']], ['stale', 'stopped', ['ALL']]]);
	assert.equal(v1[0]!.labels[vmLabels.ownerPid], '4242');
	const v0 = parseContainerList(fixtureJson('0.12.3', 'container-list.json'), [0, 12, 3]);
	assert.deepEqual(v0.map(entry => [entry.id, entry.state, entry.capAdd, entry.labels[vmLabels.session]]), [['exobuild-exo-1', 'running', ['ALL'], 'exo-1']]);
	const bootstrapped = structuredClone(fixtureJson('1.2.2', 'container-list.json')) as Array<{status: {state: string}}>;
	bootstrapped[0]!.status.state = 'bootstrapped';
	assert.throws(() => parseContainerList(bootstrapped, [1, 2, 2]), 'not a RuntimeStatus');
	assert.throws(() => parseContainerList(fixtureJson('0.12.3', 'container-list.json'), [1, 0, 0]), 'the 0.12 shape under 1.x');
});

test('versions parse from both outputs and gate --cap-add', () => {
	assert.deepEqual(parseVersion('container CLI version 0.11.0 (build: release, commit: abc)'), [0, 11, 0]);
	assert.deepEqual(parseVersion('1.2.2'), [1, 2, 2]);
	assert.equal(parseVersion('unknown'), undefined);
	assert.equal(atLeast([0, 11, 9], minimumVersion), false);
	assert.equal(atLeast([0, 12, 0], minimumVersion), true);
	assert.equal(atLeast([1, 0, 0], minimumVersion), true);
});

test('default VM resources fit BuildKit plus QEMU, not Apple\'s 1 GiB', () => {
	assert.deepEqual(defaultResources(2, 24 * 1024 ** 3), {cpus: 2, memory: '8G'});
	assert.deepEqual(defaultResources(16, 8 * 1024 ** 3), {cpus: 8, memory: '4G'});
	assert.deepEqual(defaultResources(4, 2 * 1024 ** 3), {cpus: 4, memory: '2G'});
});

test('VM options are checked before anything starts: bad values refused; linux-userns refuses them all', () => {
	const refused = (make: () => unknown, pattern: RegExp): void => {
		assert.throws(make, (error: unknown) => isUserError(error) && pattern.test(error.message) && error.hint !== undefined);
	};

	refused(() => createAppleContainerDriver({memory: 'lots'}), /--memory lots is not a size/);
	refused(() => createAppleContainerDriver({cpus: 0}), /--cpus 0/);
	refused(() => createDriver('linux-userns', {memory: '8G'}), /--memory applies to the apple-container driver/);
	refused(() => createDriver('linux-userns', {cpus: 2, virtualization: true}), /--cpus, --virtualization apply/);
	assert.equal(createDriver('linux-userns').loadImage, undefined, 'no image store on Linux');
});

test('a multi-platform archive splits into one tagged archive per platform (for stores that refuse an index)', async () => {
	const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-split-'));
	try {
		const tree = path.join(root, 'tree');
		fs.mkdirSync(tree);
		fs.writeFileSync(path.join(tree, 'hello'), 'hi');
		const layer = path.join(root, 'layer.tar');
		await tar.c({cwd: tree, file: layer}, ['hello']);
		const writer = new LayoutWriter(path.join(root, 'layout'));
		const ppc = await writer.addImage({layers: [layer], architecture: 'ppc64le'});
		const arm = await writer.addImage({layers: [layer], architecture: 'arm', variant: 'v7'});
		await writer.finish(await writer.addIndex([ppc, arm]));
		const archive = path.join(root, 'multi.tar');
		await packLayoutToArchive(path.join(root, 'layout'), archive, {tags: ['demo']});

		const parts = await splitArchiveByPlatform(archive, path.join(root, 'work'), ['demo', 'registry.example:5000/app:1']);
		assert.deepEqual(parts.map(part => [part.platform, part.tags]), [
			['linux/ppc64le', ['demo:latest-ppc64le', 'registry.example:5000/app:1-ppc64le']],
			['linux/arm/v7', ['demo:latest-arm-v7', 'registry.example:5000/app:1-arm-v7']],
		]);
		for (const part of parts) {
			const inspected = await inspectArchive(part.archivePath);
			assert.equal(inspected.kind, 'manifest');
			assert.deepEqual(inspected.images.map(image => image.platform), [part.platform]);
			assert.equal((await inspected.images[0]!.readFile('/hello'))?.toString(), 'hi');
		}
	} finally {
		fs.rmSync(root, {recursive: true, force: true});
	}
});

test('image load is given a regular file only: a /dev/fd/N path means nothing to Apple\'s images service (another process)', async () => {
	const driver = createAppleContainerDriver();
	for (const archive of ['/dev/fd/0', '/dev/stdin', os.tmpdir()]) {
		await assert.rejects(driver.loadImage!(archive, ['demo']), (error: unknown) => isUserError(error) && /needs a regular file/.test(error.message) && error.code === 'E_USAGE', archive);
	}
});

test('BuildKit\'s kept state: slot N\'s volume is created labelled and journaled, attached with -v NAME:/exobuild/engine-state (never a host path)', () => {
	assert.deepEqual(stateVolumeCreateArgs(3, 'c0ffee'), [
		'volume', 'create', '--label', 'dev.exobuild.state=buildkit', '--label', 'dev.exobuild.state-slot=3', '--opt', 'journal=ordered', 'exobuild-state-c0ffee-buildkit-3',
	]);
	const args = containerRunArgs({...run, volumes: [{volume: 'exobuild-state-c0ffee-buildkit-3', sandboxPath: '/exobuild/engine-state'}]});
	const attached = args.flatMap((arg, index) => (arg === '--volume' ? [args[index + 1]!] : []));
	assert.deepEqual(attached, ['/src/app:/exobuild/context:ro', '/tmp/out:/exobuild/out', 'exobuild-state-c0ffee-buildkit-3:/exobuild/engine-state']);
	assert.ok(args.indexOf('exobuild-state-c0ffee-buildkit-3:/exobuild/engine-state') < args.indexOf('--entrypoint'), 'an option, before the image');
	// Parser.volume takes a source with '/' for a host path: a volume name must not have one.
	assert.throws(() => containerRunArgs({...run, volumes: [{volume: 'a/b', sandboxPath: '/exobuild/engine-state'}]}), /not a name and path/);
	assert.throws(() => containerRunArgs({...run, volumes: [{volume: '-x', sandboxPath: '/exobuild/engine-state'}]}), /not a name and path/);
});

test('volume JSON: 0.12 is the flat Volume (createdAt), 1.x VolumeResource {id, configuration}; each era refuses the other\'s shape', () => {
	for (const version of ['0.12.3', '1.2.2'] as const) {
		const parsed = parseVolumeList(fixtureJson(version, 'volume-list.json'), parseVersion(version)!);
		assert.deepEqual(parsed.map(volume => [volume.name, volume.labels['dev.exobuild.state-slot']]), [['exobuild-state-buildkit-0', '0'], ['data', undefined]], version);
		assert.match(parsed[0]!.source, /\/volumes\/exobuild-state-buildkit-0\/volume\.img$/);
	}

	assert.throws(() => parseVolumeList(fixtureJson('1.2.2', 'volume-list.json'), [0, 12, 3]));
	assert.throws(() => parseVolumeList(fixtureJson('0.12.3', 'volume-list.json'), [1, 2, 2]));
});

test('the state is kept in volumes from 0.12.0 (volume create --opt journal); an older CLI is told why in one line', () => {
	assert.equal(stateVolumesUnavailable([0, 12, 0]), undefined);
	assert.equal(stateVolumesUnavailable([1, 2, 2]), undefined);
	assert.equal(stateVolumesUnavailable([0, 11, 0]), 'container 0.11.0 cannot make journaled volumes (volume create --opt journal arrived in 0.12.0); upgrade it to keep BuildKit\'s state');
	assert.ok(atLeast([0, 12, 0], minimumVersion) && atLeast(minimumVersion, [0, 12, 0]), 'the driver\'s minimum has them: the gate matters only if the minimum is lowered');
});

test('only the apple-container driver keeps the state in volumes; linux-userns keeps it in a host folder and refuses volumes', async () => {
	assert.equal(createDriver('apple-container').engineState?.kind, 'volume');
	const linux = createDriver('linux-userns');
	assert.equal(linux.engineState?.kind, 'host-folder');
	await assert.rejects(linux.start({sessionId: 'exo-x', builderImage: {} as never, mounts: [], volumes: [{volume: 'v', sandboxPath: '/exobuild/engine-state'}]}), /no volumes of its own/);
});
