/**
 * `--output type=oci`: the layout as an OCI archive (packLayoutToStream, written by
 * ./destination.ts: a file is replaced atomically, a device, FIFO or `-` written as a stream), or
 * with `tar=false` as an OCI layout folder: oci-layout, index.json naming the tags, and every
 * blob reachable from it, copied (reflinked where the filesystem can) into a sibling folder that
 * replaces dest atomically (a folder holding anything but an OCI layout is refused).
 */
import {constants} from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type {Writable} from 'node:stream';
import {packLayoutToStream, taggedIndex, verifyLayout} from '../oci/archive.js';
import {blobPath, readIndexJson} from '../oci/layout.js';
import {replaceDirAtomically} from './atomic.js';
import {resolveLayoutFolderDestination, writeFileDestination} from './destination.js';

export interface OciOutputOptions {
	readonly tags?: readonly string[];
	/** Where dest `-` streams to; process.stdout unless given. */
	readonly stdout?: Writable;
	/** Once aborted, the archive is not put in place. */
	readonly signal?: AbortSignal;
}

/** Copies the layout (reachable blobs only, each verified) into `destDir`, replacing it atomically. */
export const writeOciLayoutDir = async (layoutDir: string, destDir: string, options: OciOutputOptions = {}): Promise<void> => {
	const index = taggedIndex(await readIndexJson(layoutDir), layoutDir, options.tags ?? []);
	const digests = await verifyLayout(layoutDir);
	await replaceDirAtomically(resolveLayoutFolderDestination(destDir), async partial => {
		await fs.writeFile(path.join(partial, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}\n');
		await fs.mkdir(path.join(partial, 'blobs', 'sha256'), {recursive: true});
		for (const digest of [...digests].sort()) {
			await fs.copyFile(blobPath(layoutDir, digest), blobPath(partial, digest), constants.COPYFILE_FICLONE);
		}

		await fs.writeFile(path.join(partial, 'index.json'), `${JSON.stringify(index)}\n`);
	});
};

/** An OCI archive at `dest`: a file, a device or FIFO, `-` (stdout). */
export const writeOciArchive = async (layoutDir: string, dest: string, options: OciOutputOptions = {}): Promise<void> => {
	await writeFileDestination(dest, async out => packLayoutToStream(layoutDir, out, {tags: options.tags ?? []}), {...(options.stdout === undefined ? {} : {stdout: options.stdout}), ...(options.signal === undefined ? {} : {signal: options.signal})});
};
