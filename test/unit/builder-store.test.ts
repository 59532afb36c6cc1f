/**
 * The builder store: what `builder load` accepts and refuses, and save → load round trips.
 * Archives here are small but real OCI image archives carrying a builder's labels.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import * as tar from 'tar';
import {
	builderArchitecture, builderEngines, currentInputHashes, currentRecipeHashes, exportBuilderImage, findBuilderImage, importBuilderArchive, listWithCurrency, removeBuilderImage, resolveStoredBuilder,
} from '../../src/builder-image/index.js';
import {distroInputHash} from '../../src/builder-image/recipe.js';
import {isUserError} from '../../src/errors.js';
import {LayoutWriter} from '../../src/oci/index.js';

// The tool tarballs of the environment (test/run.sh exports them for the e2e suite) must not steer these tests.
for (const name of ['EXOBUILD_BUILDKIT', 'EXOBUILD_BUILDKIT_SHA256', 'EXOBUILD_BINFMT', 'EXOBUILD_BINFMT_SHA256']) {
	delete process.env[name];
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-store-'));
process.env['EXOBUILD_CACHE_DIR'] = path.join(root, 'cache');
after(() => fs.rmSync(root, {recursive: true, force: true}));

const archiveOf = async (name: string, labels: Record<string, string>, architecture = builderArchitecture()): Promise<string> => {
	const tree = path.join(root, `${name}-tree`);
	fs.mkdirSync(path.join(tree, 'usr/local/bin'), {recursive: true});
	fs.writeFileSync(path.join(tree, 'usr/local/bin/exobuild-agent'), `#!/bin/sh\necho ${name}\n`);
	const layer = path.join(root, `${name}-layer.tar`);
	await tar.c({cwd: tree, file: layer, portable: true}, ['usr']);
	const layout = path.join(root, `${name}-layout`);
	const writer = new LayoutWriter(layout);
	await writer.finish(await writer.addImage({layers: [layer], architecture, labels}), 'builder');
	const archive = path.join(root, `${name}.tar`);
	await tar.c({cwd: layout, file: archive, portable: true}, ['oci-layout', 'index.json', 'blobs']);
	return archive;
};

const rejects = async (promise: Promise<unknown>, pattern: RegExp): Promise<void> => {
	await assert.rejects(promise, (error: unknown) => {
		assert.ok(isUserError(error), String(error));
		assert.match(error.message, pattern);
		assert.ok(error.hint, 'has a hint');
		return true;
	});
};

test('load verifies and stores a current builder; save writes a byte-identical archive; it is the one builds use', async () => {
	const {containerfile} = await currentInputHashes();
	const archive = await archiveOf('current', {'dev.exobuild.builder-kind': 'containerfile', 'dev.exobuild.input-hash': containerfile});
	const loaded = await importBuilderArchive(archive);
	assert.equal(loaded.kind, 'containerfile');
	assert.equal(loaded.current, true);
	assert.equal(loaded.reference, `exobuild-builder:containerfile-${containerfile.slice(0, 12)}`);
	assert.equal((await findBuilderImage())?.archivePath, loaded.archivePath, 'a current containerfile builder is preferred');

	const saved = path.join(root, 'saved.tar');
	fs.writeFileSync(saved, 'an older file that must be replaced whole');
	await exportBuilderImage(await resolveStoredBuilder('containerfile'), saved);
	const digest = (file: string): string => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
	assert.equal(digest(saved), digest(archive));
	assert.deepEqual(fs.readdirSync(root).filter(name => name.includes('.partial')), [], 'no partial file left');

	await removeBuilderImage(loaded);
	assert.equal((await listWithCurrency()).some(image => image.inputHash === containerfile), false);
	assert.equal(fs.existsSync(loaded.archivePath), false);
});

test('a builder from another recipe version loads, is listed as stale, and is not used', async () => {
	const stale = crypto.createHash('sha256').update('another recipe').digest('hex');
	const loaded = await importBuilderArchive(await archiveOf('stale', {'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': stale}));
	assert.equal(loaded.current, false);
	assert.equal((await listWithCurrency()).find(image => image.inputHash === stale)?.current, false);
	assert.notEqual((await findBuilderImage())?.inputHash, stale);
	await removeBuilderImage(loaded);
});

test('load refuses what is not a usable builder, with a one-line cause and a hint', async () => {
	const hash = crypto.createHash('sha256').update('x').digest('hex');
	await rejects(importBuilderArchive(path.join(root, 'missing.tar')), /does not exist/);
	const notTar = path.join(root, 'not.tar');
	fs.writeFileSync(notTar, 'hello');
	await rejects(importBuilderArchive(notTar), /not a usable exobuild builder image: .*(tar|layout)/);
	await rejects(importBuilderArchive(await archiveOf('unlabelled', {})), /no valid dev\.exobuild\.builder-kind/);
	const foreign = builderArchitecture() === 'ppc64le' ? 's390x' : 'ppc64le';
	await rejects(importBuilderArchive(await archiveOf('foreign', {'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': hash}, foreign)), new RegExp(`is for ${foreign}`));

	// A blob whose bytes do not match its digest.
	const good = await archiveOf('corrupt', {'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': hash});
	const unpacked = path.join(root, 'corrupt-unpacked');
	fs.mkdirSync(unpacked);
	await tar.x({file: good, cwd: unpacked});
	const blobs = path.join(unpacked, 'blobs', 'sha256');
	const largest = fs.readdirSync(blobs).sort((a, b) => fs.statSync(path.join(blobs, b)).size - fs.statSync(path.join(blobs, a)).size)[0]!;
	fs.appendFileSync(path.join(blobs, largest), 'tampered');
	const corrupt = path.join(root, 'corrupt-bad.tar');
	await tar.c({cwd: unpacked, file: corrupt, portable: true}, ['oci-layout', 'index.json', 'blobs']);
	await rejects(importBuilderArchive(corrupt), /does not verify/);
	assert.deepEqual((await listWithCurrency()).map(image => image.inputHash).filter(h => h === hash), [], 'nothing refused was stored');
});

test('a distro builder with BuildKit and binfmt: its labels give its record and engines; builds prefer it; labels that do not give its input hash are refused', async () => {
	const {distro: recipe} = await currentRecipeHashes();
	const buildkit = {version: 'v0.32.2', sha256: 'a'.repeat(64)};
	const binfmt = {version: 'v10.2.3-68', sha256: 'b'.repeat(64)};
	const toolLabels = {
		'dev.exobuild.buildkit.version': buildkit.version, 'dev.exobuild.buildkit.sha256': buildkit.sha256,
		'dev.exobuild.binfmt.version': binfmt.version, 'dev.exobuild.binfmt.sha256': binfmt.sha256,
	};
	const plain = distroInputHash(recipe, {});
	const withTools = distroInputHash(recipe, {buildkit, binfmt});
	const buildahOnly = await importBuilderArchive(await archiveOf('distro-plain', {'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': plain, 'dev.exobuild.recipe-hash': recipe}));
	assert.equal(buildahOnly.current, true);
	assert.deepEqual(builderEngines(buildahOnly), ['buildah']);
	const loaded = await importBuilderArchive(await archiveOf('distro-tools', {'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': withTools, 'dev.exobuild.recipe-hash': recipe, ...toolLabels}));
	assert.equal(loaded.current, true);
	assert.deepEqual(loaded.buildkit, buildkit);
	assert.deepEqual(loaded.binfmt, binfmt);
	assert.deepEqual(builderEngines(loaded), ['buildkit', 'buildah']);
	const stored = (await listWithCurrency()).find(image => image.inputHash === withTools);
	assert.deepEqual([stored?.buildkit, stored?.binfmt, stored?.recipeHash], [buildkit, binfmt, recipe], 'the record keeps them');
	assert.equal((await findBuilderImage({kind: 'distro'}))?.inputHash, withTools, 'of two current distro builders, the one with BuildKit');
	assert.equal((await findBuilderImage({kind: 'distro', distroInputHash: plain}))?.inputHash, plain, 'unless another one is asked for');

	const other = crypto.createHash('sha256').update('not the hash of these labels').digest('hex');
	await rejects(importBuilderArchive(await archiveOf('distro-lying', {'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': other, 'dev.exobuild.recipe-hash': recipe, ...toolLabels})), /do not give its input hash/);
	await rejects(importBuilderArchive(await archiveOf('distro-half', {'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': withTools, 'dev.exobuild.recipe-hash': recipe, 'dev.exobuild.buildkit.version': 'v1'})), /dev\.exobuild\.buildkit\.\* labels are not a version and a SHA-256/);
	await removeBuilderImage(loaded);
	await removeBuilderImage(buildahOnly);
});

test('a containerfile builder made from stand-ins: its dev.exobuild.base-overrides label gives baseOverrides in its record; a malformed one, or one on a distro builder, is refused', async () => {
	const {containerfile: hash, distro: recipe} = await currentRecipeHashes();
	const digest = (text: string): string => `sha256:${crypto.createHash('sha256').update(text).digest('hex')}`;
	const overrides = {binfmt: digest('b'), buildkit: digest('k'), ubuntu: digest('u')};
	const label = `binfmt@${overrides.binfmt},buildkit@${overrides.buildkit},ubuntu@${overrides.ubuntu}`;
	const kind = {'dev.exobuild.builder-kind': 'containerfile', 'dev.exobuild.input-hash': hash};
	const loaded = await importBuilderArchive(await archiveOf('standins', {...kind, 'dev.exobuild.base-overrides': label}));
	assert.equal(loaded.current, true, 'stand-ins do not change the input hash: builder load takes it as current');
	assert.deepEqual(loaded.baseOverrides, overrides);
	assert.deepEqual((await listWithCurrency()).find(image => image.inputHash === hash)?.baseOverrides, overrides, 'the record keeps them');
	const pinned = await importBuilderArchive(await archiveOf('pinned', kind));
	assert.equal(pinned.baseOverrides, undefined, 'made from the pins: no baseOverrides');

	for (const bad of ['ubuntu', `ubuntu@${overrides.ubuntu},ubuntu@${overrides.ubuntu}`, `Ubuntu@${overrides.ubuntu}`, `ubuntu@sha256:12`, '']) {
		await rejects(importBuilderArchive(await archiveOf(`bad-overrides-${bad.length}`, {...kind, 'dev.exobuild.base-overrides': bad})), /dev\.exobuild\.base-overrides label is not a list of NAME@sha256:DIGEST/);
	}

	await rejects(importBuilderArchive(await archiveOf('distro-overrides', {
		'dev.exobuild.builder-kind': 'distro', 'dev.exobuild.input-hash': distroInputHash(recipe, {}), 'dev.exobuild.recipe-hash': recipe, 'dev.exobuild.base-overrides': label,
	})), /a distro builder has no pinned bases to override/);
	await removeBuilderImage(pinned);
});
