/**
 * The linux-userns driver's image builder before it starts anything: it needs a stored builder
 * with BuildKit, and says how to make one (exit 2) when there is none or the current one has
 * buildah only. (The build itself runs in test/e2e/containerfile-builder.test.ts.)
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import * as tar from 'tar';
import {builderArchitecture, currentRecipeHashes, importBuilderArchive} from '../../src/builder-image/index.js';
import {distroInputHash} from '../../src/builder-image/recipe.js';
import {isUserError} from '../../src/errors.js';
import {LayoutWriter} from '../../src/oci/index.js';
import {createDriver} from '../../src/sandboxes/index.js';

// The tool tarballs of the environment (test/run.sh exports them for the e2e suite) must not steer these tests.
for (const name of ['EXOBUILD_BUILDKIT', 'EXOBUILD_BUILDKIT_SHA256', 'EXOBUILD_BINFMT', 'EXOBUILD_BINFMT_SHA256']) {
	delete process.env[name];
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-image-build-'));
process.env['EXOBUILD_CACHE_DIR'] = path.join(root, 'cache');
delete process.env['EXOBUILD_BUILDKIT'];
delete process.env['EXOBUILD_BINFMT'];
after(() => fs.rmSync(root, {recursive: true, force: true}));

const refusedFor = async (pattern: RegExp): Promise<void> => {
	const driver = createDriver('linux-userns');
	await assert.rejects(driver.buildImage!({containerfile: path.join(root, 'Containerfile'), contextDir: root, buildArgs: {}, platform: `linux/${builderArchitecture()}`, dest: path.join(root, 'out.tar')}), (error: unknown) => {
		assert.ok(isUserError(error));
		assert.equal(error.exitCode, 2);
		assert.match(error.message, pattern);
		assert.equal(error.hint, 'make one first: `exobuild builder build --buildkit SOURCE` (a moby/buildkit release tarball; see docs/buildkit.md)');
		return true;
	});
	assert.ok(!fs.existsSync(path.join(root, 'out.tar')));
};

test('linux-userns: distro is the default recipe; its image builder takes base images from layouts, and needs a builder with BuildKit', async () => {
	const driver = createDriver('linux-userns');
	assert.equal(driver.defaultRecipe, 'distro');
	assert.equal(driver.buildImageOverrides, true);
	assert.equal(createDriver('apple-container').defaultRecipe, 'containerfile');
	await refusedFor(/needs a builder with BuildKit, and there is no builder image in the cache$/);

	// A buildah-only distro builder (the labels a real one carries; the image is a small real archive).
	const {distro: recipe} = await currentRecipeHashes();
	const tree = path.join(root, 'tree');
	fs.mkdirSync(path.join(tree, 'usr/local/bin'), {recursive: true});
	fs.writeFileSync(path.join(tree, 'usr/local/bin/exobuild-agent'), '#!/bin/sh\n');
	const layer = path.join(root, 'layer.tar');
	await tar.c({cwd: tree, file: layer, portable: true}, ['usr']);
	const layout = path.join(root, 'layout');
	const writer = new LayoutWriter(layout);
	const inputHash = distroInputHash(recipe, {});
	await writer.finish(await writer.addImage({layers: [layer], architecture: builderArchitecture(), labels: {'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': inputHash, 'dev.exobuild.recipe-hash': recipe}}), 'builder');
	const archive = path.join(root, 'builder.tar');
	await tar.c({cwd: layout, file: archive, portable: true}, ['oci-layout', 'index.json', 'blobs']);
	assert.equal((await importBuilderArchive(archive)).current, true);
	await refusedFor(new RegExp(`the current one \\(exobuild-builder:distro-${inputHash.slice(0, 12)}\\) has buildah only$`));
});
