/**
 * `--output type=oci`: the layout as an OCI archive (packLayoutToArchive; dest `-` streams it
 * to stdout), or with `tar=false` as an OCI layout folder: oci-layout, index.json naming the
 * tags, and every blob reachable from it, copied (reflinked where the filesystem can) into a
 * sibling folder that replaces dest atomically.
 */
import {constants, createReadStream} from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type {Writable} from 'node:stream';
import {packLayoutToArchive, taggedIndex, verifyLayout} from '../oci/archive.js';
import {blobPath, readIndexJson} from '../oci/layout.js';
import {removeTree} from '../runs/owned-dir.js';
import {replaceDirAtomically, streamTo} from './atomic.js';

export interface OciOutputOptions {
	readonly tags?: readonly string[];
	/** Where dest `-` streams to; process.stdout unless given. */
	readonly stdout?: Writable;
}

/** Copies the layout (reachable blobs only, each verified) into `destDir`, replacing it atomically. */
export const writeOciLayoutDir = async (layoutDir: string, destDir: string, options: OciOutputOptions = {}): Promise<void> => {
	const index = taggedIndex(await readIndexJson(layoutDir), layoutDir, options.tags ?? []);
	const digests = await verifyLayout(layoutDir);
	await replaceDirAtomically(destDir, async partial => {
		await fs.writeFile(path.join(partial, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}\n');
		await fs.mkdir(path.join(partial, 'blobs', 'sha256'), {recursive: true});
		for (const digest of [...digests].sort()) {
			// eslint-disable-next-line no-await-in-loop
			await fs.copyFile(blobPath(layoutDir, digest), blobPath(partial, digest), constants.COPYFILE_FICLONE);
		}

		await fs.writeFile(path.join(partial, 'index.json'), `${JSON.stringify(index)}\n`);
	});
};

/** An OCI archive at `dest`, or on stdout for `-` (packed in a temporary file first). */
export const writeOciArchive = async (layoutDir: string, dest: string, options: OciOutputOptions = {}): Promise<void> => {
	if (dest !== '-') {
		await fs.mkdir(path.dirname(path.resolve(dest)), {recursive: true});
		await packLayoutToArchive(layoutDir, dest, {tags: options.tags ?? []});
		return;
	}

	const scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'exobuild-oci-'));
	try {
		const file = path.join(scratch, 'image.tar');
		await packLayoutToArchive(layoutDir, file, {tags: options.tags ?? []});
		await streamTo(createReadStream(file), options.stdout ?? process.stdout);
	} finally {
		await removeTree(scratch);
	}
};
