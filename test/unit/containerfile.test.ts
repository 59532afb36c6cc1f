/**
 * Containerfile.builder, read as text: every upstream image pinned by version and digest in its
 * ARG block (the one place), every FROM going through those ARGs or an earlier stage, and every
 * build arg exobuild passes declared. Its build cannot run here (no registry); its tag must
 * change whenever it or vm-image/ changes.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import * as tar from 'tar';
import {baseImageOverrides, buildContainerfileBuilder, containerfileBuildArgs} from '../../src/builder-image/containerfile.js';
import {builderArchitecture} from '../../src/builder-image/store.js';
import {createDriver} from '../../src/sandboxes/index.js';
import {baseOverridesLabel, containerfileBases, containerfileHash, containerfilePath} from '../../src/builder-image/identity.js';
import {isUserError} from '../../src/errors.js';
import {LayoutWriter} from '../../src/oci/index.js';

const text = fs.readFileSync(containerfilePath, 'utf8');
const lines = text.split('\n').filter(line => !line.startsWith('#'));

test('every FROM names a pinned ARG or an earlier stage; every image ARG is pinned by tag and digest', () => {
	const args = new Map(lines.flatMap(line => {
		const match = /^ARG (\w+)(?:=(.*))?$/.exec(line.trim());
		return match ? [[match[1]!, match[2]]] as Array<[string, string | undefined]> : [];
	}));
	const stages: string[] = [];
	for (const line of lines.filter(line => line.startsWith('FROM '))) {
		const [, image, , stage] = line.split(/\s+/);
		const arg = /^\$\{(\w+)\}$/.exec(image!)?.[1];
		if (arg === undefined) {
			assert.ok(stages.includes(image!), `FROM ${image} is neither a pinned ARG nor an earlier stage`);
		} else {
			assert.match(args.get(arg) ?? '', /^docker\.io\/[\w./-]+:[\w.-]+@sha256:[a-f\d]{64}$/, `${arg} is pinned by tag and digest`);
		}

		if (stage !== undefined) {
			stages.push(stage);
		}
	}

	assert.ok(stages.length >= 3, 'binfmt, buildkit and probe stages');
	for (const key of Object.keys(containerfileBuildArgs('0'.repeat(64), 'http://mirror.example/debian'))) {
		assert.ok(args.has(key), `ARG ${key} is declared`);
	}
});

test('the image tag follows Containerfile.builder and vm-image/', async () => {
	const before = await containerfileHash();
	assert.match(before, /^[a-f\d]{64}$/);
	assert.equal(await containerfileHash(), before, 'stable');
	const original = fs.readFileSync(containerfilePath);
	try {
		fs.appendFileSync(containerfilePath, '\n# changed\n');
		assert.notEqual(await containerfileHash(), before);
	} finally {
		fs.writeFileSync(containerfilePath, original);
	}
});

test('--base-image names come from the ARG <NAME>_IMAGE= lines; each override is a build arg and a named context; unknown or malformed ones exit 2 naming the bases', async () => {
	assert.deepEqual(containerfileBases(text).map(base => [base.name, base.arg]), [['ubuntu', 'UBUNTU_IMAGE'], ['binfmt', 'BINFMT_IMAGE'], ['buildkit', 'BUILDKIT_IMAGE']]);
	for (const base of containerfileBases(text)) {
		assert.match(base.pinned, /^docker\.io\/.+@sha256:[a-f\d]{64}$/, `${base.name} keeps its pin`);
	}

	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-cf-'));
	try {
		const layout = path.join(dir, 'layout');
		const writer = new LayoutWriter(layout);
		const layer = path.join(dir, 'layer.tar');
		fs.mkdirSync(path.join(dir, 'tree', 'etc'), {recursive: true});
		fs.writeFileSync(path.join(dir, 'tree', 'etc', 'os-release'), 'ID=debian\n');
		await tar.c({cwd: path.join(dir, 'tree'), file: layer, portable: true}, ['etc']);
		const manifest = await writer.addImage({layers: [layer], architecture: 'ppc64le'});
		await writer.finish(manifest, 'standin');
		const {overrides, digests} = await baseImageOverrides([`ubuntu=oci-layout://${layout}`], 'linux/ppc64le', text);
		assert.deepEqual(overrides, [{arg: 'UBUNTU_IMAGE', contextName: 'exobuild-base-ubuntu', layoutDir: layout}]);
		assert.match(digests['ubuntu'] ?? '', /^sha256:[a-f\d]{64}$/);
		assert.equal(baseOverridesLabel({ubuntu: digests['ubuntu']!, binfmt: 'sha256:'.padEnd(71, '0')}), `binfmt@sha256:${'0'.repeat(64)},ubuntu@${digests['ubuntu']}`);

		const refused = async (values: string[], pattern: RegExp, platform = 'linux/ppc64le'): Promise<void> => {
			await assert.rejects(baseImageOverrides(values, platform, text), (error: unknown) => {
				assert.ok(isUserError(error));
				assert.equal(error.exitCode, 2);
				assert.match(`${error.message}\n${error.hint}`, pattern);
				return true;
			});
		};

		await refused([`debian=oci-layout://${layout}`], /pins no base of that name\nname one of: ubuntu, binfmt, buildkit/);
		await refused([`ubuntu=${layout}`], /expected NAME=oci-layout:\/\/DIR/);
		await refused([`ubuntu=oci-layout://${layout}`, `ubuntu=oci-layout://${layout}`], /given twice/);
		await refused([`ubuntu=oci-layout://${layout}`], /--base-image ubuntu=oci-layout:.*\ngive an OCI image layout folder that serves linux\/s390x/, 'linux/s390x');

		// A driver whose image builder cannot serve layouts (apple-container pulls the pins) refuses them before it builds.
		const native = path.join(dir, 'native');
		const nativeWriter = new LayoutWriter(native);
		await nativeWriter.finish(await nativeWriter.addImage({layers: [layer], architecture: builderArchitecture()}), 'standin');
		const apple = createDriver('apple-container');
		assert.notEqual(apple.buildImageOverrides, true);
		await assert.rejects(buildContainerfileBuilder(apple, {baseImages: [`ubuntu=oci-layout://${native}`]}), (error: unknown) => {
			assert.ok(isUserError(error));
			assert.equal(error.exitCode, 2);
			assert.match(error.message, /^--base-image: the apple-container driver's image builder cannot serve base images from OCI layouts$/);
			return true;
		});
	} finally {
		fs.rmSync(dir, {recursive: true, force: true});
	}
});
