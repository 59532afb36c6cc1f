/**
 * Unpacking an image from an OCI image archive into a root filesystem on the host (the builder
 * image's rootfs). The archive's own entries are extracted as regular files and folders only;
 * the image's layers are then applied in order by ./layer-apply.ts (resolved beneath the root,
 * whiteouts after resolution, no device nodes, setuid/setgid bits cleared).
 */
import {constants as fsConstants} from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type * as tar from 'tar';
import {dir as temporaryDirectory} from 'tmp-promise';
import {UserError} from '../errors.js';
import {entryComponents, lstatOrUndefined} from './in-root.js';
import {applyLayer} from './layer-apply.js';
import {verifyBlob, userLayout} from './blobs.js';
import {blobPath, imagesOfLayout} from './layout.js';
import {hostPlatform} from '../platforms/parse.js';
import {platformIdOf} from './schema.js';
import {openTarFile, tarEntries} from './tar-entries.js';

export {applyLayer, layerRefusedCode, type ApplyLayerOptions} from './layer-apply.js';

export const archiveRefusedCode = 'E_ARCHIVE_REFUSED';

export interface UnpackOptions {
	/** Stops the unpack between entries. */
	readonly signal?: AbortSignal;
}

const refuseArchive = (archivePath: string, name: string, why: string): UserError => new UserError(`${archivePath}: entry "${name}" ${why}`, {
	hint: 'an OCI archive holds only folders and regular files (index.json, oci-layout, blobs/); make the archive again with `exobuild builder save` or an OCI exporter',
	code: archiveRefusedCode,
	exitCode: 1,
});

/** Writes one file of the outer archive: created exclusively, never through a symlink. */
const writeArchiveFile = async (entry: tar.ReadEntry, file: string, signal: AbortSignal | undefined): Promise<void> => {
	const handle = await fs.open(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
	try {
		let written = 0;
		for await (const chunk of entry as AsyncIterable<Buffer>) {
			signal?.throwIfAborted();
			let offset = 0;
			while (offset < chunk.length) {
				const {bytesWritten} = await handle.write(chunk, offset, chunk.length - offset);
				if (bytesWritten <= 0) {
					throw new Error(`${file}: a write wrote nothing`);
				}

				offset += bytesWritten;
			}

			written += chunk.length;
		}

		if (written !== entry.size) {
			throw new Error(`${entry.path}: the archive ended ${entry.size - written} bytes early`);
		}
	} catch (error) {
		await handle.close().catch(() => undefined);
		throw error;
	}

	await handle.close();
};

/**
 * Extracts an OCI archive's entries into the empty folder `dest`: folders and regular files
 * only. A symlink, hardlink, device, FIFO, an absolute name or one with `..` is refused.
 */
export const extractArchiveFiles = async (archivePath: string, dest: string, signal?: AbortSignal): Promise<void> => {
	for await (const entry of tarEntries(await openTarFile(archivePath), signal)) {
		const name = entry.path;
		const parts = entryComponents(name);
		const isFolder = entry.type === 'Directory';
		if (parts === undefined || name.startsWith('/')) {
			entry.resume();
			throw refuseArchive(archivePath, name, 'leaves the archive (an absolute name or a ".." component)');
		}

		if (!isFolder && entry.type !== 'File' && entry.type !== 'OldFile') {
			entry.resume();
			throw refuseArchive(archivePath, name, `is a ${entry.type}, not a folder or a regular file`);
		}

		if (parts.length === 0) {
			entry.resume();
			if (!isFolder) {
				throw refuseArchive(archivePath, name, 'is the archive\'s root, as a file');
			}

			continue;
		}

		// Folders only ever come from this loop, so no component on the way can be a symlink; a parent a file took is an error.
		const file = path.join(dest, ...parts);
		await fs.mkdir(path.dirname(file), {recursive: true, mode: 0o700});
		if (isFolder) {
			entry.resume();
			const existing = await lstatOrUndefined(file);
			if (existing === undefined) {
				await fs.mkdir(file, {mode: 0o700});
			} else if (!existing.isDirectory()) {
				throw refuseArchive(archivePath, name, 'is a folder where the archive already has a file');
			}
		} else {
			await writeArchiveFile(entry, file, signal).catch((error: unknown) => {
				if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
					throw refuseArchive(archivePath, name, 'is in the archive twice');
				}

				throw error;
			});
		}
	}
};

/**
 * Unpacks the image of an OCI image archive into `destDir` (created). The archive holds one
 * image, or an index from which the host architecture's image is taken. As root, owners are
 * kept (the sandbox maps them); setuid/setgid bits are always cleared: the cache must not hold
 * setuid-root programs, and the sandbox does not need them.
 */
export const unpackImageArchive = async (archivePath: string, destDir: string, options: UnpackOptions = {}): Promise<void> => {
	const staging = await temporaryDirectory({unsafeCleanup: true, tmpdir: path.dirname(destDir), prefix: '.oci-archive-', mode: 0o700});
	try {
		await extractArchiveFiles(archivePath, staging.path, options.signal);
		const layout = userLayout(staging.path, archivePath);
		const images = await imagesOfLayout(layout);
		const wanted = hostPlatform()?.id ?? `linux/${process.arch}`;
		const image = images.length === 1 ? images[0] : images.find(candidate => platformIdOf(candidate.config) === wanted || candidate.platform === wanted);
		if (image === undefined) {
			throw new UserError(`${archivePath} has no image for ${wanted} (it has ${images.map(i => i.platform).join(', ') || 'none'})`, {
				hint: 'a builder image runs on this machine: make or load one for its architecture (`exobuild builder build`)', code: 'E_BUILDER_ARCHIVE', exitCode: 2,
			});
		}

		await fs.mkdir(destDir, {recursive: true});
		for (const layer of image.manifest.layers) {
			options.signal?.throwIfAborted();
			await verifyBlob(layout, layer, `a layer of ${image.platform}`);

			await applyLayer(blobPath(staging.path, layer.digest), destDir, {keepOwners: process.getuid?.() === 0, keepSetuid: false, ...(options.signal === undefined ? {} : {signal: options.signal})});
		}
	} finally {
		await staging.cleanup();
	}
};
