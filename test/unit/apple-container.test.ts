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
import * as tar from 'tar';
import {inspectArchive, LayoutWriter, packLayoutToArchive} from '../../src/oci/index.js';
import {isUserError} from '../../src/errors.js';
import {atLeast, parseVersion} from '../../src/sandboxes/apple-container/container-cli.js';
import {createAppleContainerRuntime, defaultResources, minimumVersion} from '../../src/sandboxes/apple-container/index.js';
import {splitArchiveByPlatform} from '../../src/sandboxes/apple-container/per-platform.js';
import {containerRunArgs, vmLabels, type VmRun} from '../../src/sandboxes/apple-container/run-args.js';
import {containerId, containerLabels, containerList, containerState, imageList, imageName} from '../../src/sandboxes/apple-container/shapes.js';
import {createRuntime} from '../../src/sandboxes/index.js';

const run: VmRun = {
	name: 'exobuild-exo-1', sessionId: 'exo-1', ownerPid: 42, ownerStart: '123', image: 'exobuild-builder:distro-0123456789ab',
	mounts: [{hostPath: '/src/app', sandboxPath: '/exobuild/context', readOnly: true}, {hostPath: '/tmp/out', sandboxPath: '/exobuild/out', readOnly: false}],
	env: {}, agentArgs: ['build', '--platform', 'linux/ppc64le'], cpus: 4, memory: '8G', virtualization: false, rosetta: false, writableProcSys: false,
};

test('container run: --rm, a unique name, owner labels, --cap-add ALL (no --privileged), resources, ro/rw shares, the agent as entrypoint', () => {
	const args = containerRunArgs(run);
	assert.deepEqual(args, [
		'run', '--rm', '--name', 'exobuild-exo-1',
		'--label', `${vmLabels.session}=exo-1`, '--label', `${vmLabels.ownerPid}=42`, '--label', `${vmLabels.ownerStart}=123`,
		'--cap-add', 'ALL', '--cpus', '4', '--memory', '8G',
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

test('list JSON: 1.x and pre-1.0 shapes give the same id, state and labels', () => {
	const labels = {[vmLabels.ownerPid]: '42'};
	const v1 = containerList.parse([{id: 'a', configuration: {id: 'a', labels, image: {reference: 'x'}}, status: {state: 'running', networks: []}}]);
	const v0 = containerList.parse([{status: 'stopped', configuration: {id: 'b', labels}, networks: []}]);
	assert.deepEqual([containerId(v1[0]!), containerState(v1[0]!), containerLabels(v1[0]!)], ['a', 'running', labels]);
	assert.deepEqual([containerId(v0[0]!), containerState(v0[0]!), containerLabels(v0[0]!)], ['b', 'stopped', labels]);
	assert.throws(() => containerList.parse([{id: 'c'}]), 'a configuration is required');
	const images = imageList.parse([{name: 'n1'}, {configuration: {reference: 'n2'}}, {reference: 'n3'}]);
	assert.deepEqual(images.map(imageName), ['n1', 'n2', 'n3']);
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

	refused(() => createAppleContainerRuntime({memory: 'lots'}), /--memory lots is not a size/);
	refused(() => createAppleContainerRuntime({cpus: 0}), /--cpus 0/);
	refused(() => createRuntime('linux-userns', {memory: '8G'}), /--memory applies to the apple-container driver/);
	refused(() => createRuntime('linux-userns', {cpus: 2, virtualization: true}), /--cpus, --virtualization apply/);
	assert.equal(createRuntime('linux-userns').loadImage, undefined, 'no image store on Linux');
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
			// eslint-disable-next-line no-await-in-loop
			const inspected = await inspectArchive(part.archivePath);
			assert.equal(inspected.kind, 'manifest');
			assert.deepEqual(inspected.images.map(image => image.platform), [part.platform]);
			// eslint-disable-next-line no-await-in-loop
			assert.equal((await inspected.images[0]!.readFile('/hello'))?.toString(), 'hi');
		}
	} finally {
		fs.rmSync(root, {recursive: true, force: true});
	}
});
