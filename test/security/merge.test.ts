/**
 * Hostile per-node results given to mergeLayouts (src/oci/merge.ts): a part's blob that is a
 * symlink to a host file is refused even when the file has the right bytes (so it was never taken),
 * blobs/sha256 that is a symlink is refused, and a blob that is a hard link to a host file is
 * copied, never linked, so nothing written to the merged layout can reach that file. Each test
 * checks a victim folder outside, byte for byte.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import * as tar from 'tar';
import type {UserError} from '../../src/errors.js';
import {blobPath, LayoutWriter, mediaTypes, mergeLayouts, producedLayout, type Descriptor} from '../../src/oci/index.js';
import {makeVictim, type Victim} from './victim.js';
import {refusalOf} from '../fixtures/refusal.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-merge-sec-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));

let made = 0;

/** A one-platform layout (index.json → index → manifest) with one layer holding /etc/arch. */
const partLayout = async (architecture: string, extraLayer?: Descriptor): Promise<{dir: string; manifest: Descriptor}> => {
	const name = `part-${++made}`;
	const tree = path.join(root, `${name}-tree`);
	fs.mkdirSync(path.join(tree, 'etc'), {recursive: true});
	fs.writeFileSync(path.join(tree, 'etc', 'arch'), `${architecture}\n`);
	const layer = path.join(root, `${name}.tar`);
	await tar.c({cwd: tree, file: layer, portable: true}, ['etc']);
	const dir = path.join(root, name);
	const writer = new LayoutWriter(dir);
	let manifest = await writer.addImage({layers: [layer], architecture});
	if (extraLayer !== undefined) {
		// The same image with one more layer: a descriptor that matches the victim's file byte for byte.
		const json = JSON.parse(fs.readFileSync(blobPath(dir, manifest.digest), 'utf8')) as {layers: Descriptor[]};
		manifest = {...await writer.addBlob(JSON.stringify({...json, layers: [...json.layers, extraLayer]}), mediaTypes.manifest), platform: manifest.platform!};
	}

	await writer.finish(await writer.addIndex([manifest]), 'latest');
	return {dir, manifest};
};

const withVictim = async (run: (victim: Victim) => Promise<void>): Promise<void> => {
	const victim = makeVictim(root);
	try {
		await run(victim);
		victim.assertUnchanged();
	} finally {
		victim.remove();
	}
};

const descriptorOf = (file: string): Descriptor => {
	const content = fs.readFileSync(file);
	return {mediaType: mediaTypes.layer, digest: `sha256:${crypto.createHash('sha256').update(content).digest('hex')}`, size: content.length};
};

const refusal = async (promise: Promise<unknown>): Promise<UserError> => refusalOf(promise, 'expected the merge to be refused');

const mergeInto = async (parts: readonly string[], platforms: readonly string[], link = true): Promise<{dest: string; promise: ReturnType<typeof mergeLayouts>}> => {
	const dest = path.join(root, `merged-${++made}`);
	return {dest, promise: mergeLayouts(parts.map((dir, position) => producedLayout(dir, `node-${position}`)), dest, {platforms, link})};
};

test('merge: a layer blob that is a symlink to a host file with exactly the right bytes is refused; the file is unchanged and nothing is left', async () => withVictim(async victim => {
	const target = path.join(victim.dir, 'a');
	const stolen = descriptorOf(target);
	const ppc = await partLayout('ppc64le');
	const s390x = await partLayout('s390x', stolen);
	fs.symlinkSync(target, blobPath(s390x.dir, stolen.digest));
	for (const link of [true, false]) {
		const {dest, promise} = await mergeInto([ppc.dir, s390x.dir], ['linux/ppc64le', 'linux/s390x'], link);
		const error = await refusal(promise);
		assert.match(error.message, /^node-1: blob sha256:[0-9a-f]{12}… \(layer 2 of linux\/s390x\) is a symbolic link, not a file$/);
		assert.equal(error.exitCode, 1);
		assert.equal(fs.existsSync(dest), false, 'the merged layout is removed');
	}
}));

test('merge: blobs/sha256 of a part that is a symlink to a folder outside it is refused', async () => withVictim(async victim => {
	const ppc = await partLayout('ppc64le');
	const s390x = await partLayout('s390x');
	// The part's blobs moved out of it, next to the victim, and the part pointing at them.
	const outside = path.join(victim.dir, '..', `blobs-outside-${made}`);
	fs.renameSync(path.join(s390x.dir, 'blobs', 'sha256'), outside);
	fs.symlinkSync(outside, path.join(s390x.dir, 'blobs', 'sha256'));
	const {dest, promise} = await mergeInto([ppc.dir, s390x.dir], ['linux/ppc64le', 'linux/s390x']);
	assert.match((await refusal(promise)).message, /^node-1: blobs\/sha256 is a symbolic link, not a folder$/);
	assert.equal(fs.existsSync(dest), false);
}));

test('merge: a blob that is a hard link to a host file is copied, never linked: writing to the merged layout cannot reach the host file', async () => withVictim(async victim => {
	const target = path.join(victim.dir, 'f');
	const stolen = descriptorOf(target);
	const ppc = await partLayout('ppc64le');
	const s390x = await partLayout('s390x', stolen);
	fs.linkSync(target, blobPath(s390x.dir, stolen.digest));
	const {dest, promise} = await mergeInto([ppc.dir, s390x.dir], ['linux/ppc64le', 'linux/s390x']);
	const merged = await promise;
	assert.ok(merged.linked > 0, 'the part\'s own blobs were linked');
	const copy = blobPath(dest, stolen.digest);
	assert.notEqual(fs.statSync(copy).ino, fs.statSync(target).ino, 'the host file\'s blob is a copy');
	fs.writeFileSync(copy, 'overwritten through the merged layout\n');
	fs.rmSync(dest, {recursive: true});
	fs.rmSync(blobPath(s390x.dir, stolen.digest));
}));
