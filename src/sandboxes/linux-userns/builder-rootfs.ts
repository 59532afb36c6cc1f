/**
 * The builder image unpacked once per manifest digest, shared read-only by every sandbox (it is
 * the overlay's lower layer). Unpacking goes to a folder owned by this process and is renamed
 * into place when complete, so a half-unpacked tree is never used and a killed unpack is reaped.
 * The archive is checked against its record first (src/builder-image/store.ts); a completion
 * marker beside the tree (`<digest>.complete`, written last) names the manifest digest and the
 * archive file it was unpacked from. A tree without a valid marker, or whose archive changed
 * since, is removed and unpacked again.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {z} from 'zod';
import type {BuilderImage} from '../../builder-image/builder-image.js';
import {
	archivePathFor, assertArchiveUnchanged, fileIdentity, sameIdentity, verifyStoredArchive, type FileIdentity,
} from '../../builder-image/store.js';
import {unpackImageArchive} from '../../oci/unpack.js';
import {runtimeStateDir} from '../../paths.js';
import {addExitCleanup} from '../../runs/exit-cleanups.js';
import {checkCacheFolder, ensureCacheFolder, readCacheRecord} from '../../runs/cache-guard.js';
import {writeCacheJson} from '../../runs/cache-write.js';
import {withLock} from '../../runs/lock.js';
import {createOwnedDir, reapOwnedDirs} from '../../runs/owned-dir.js';
import {removeTree} from '../../fs/remove-tree.js';

const rootfsDir = (): string => path.join(runtimeStateDir('linux-userns'), 'rootfs');
const unpackPrefix = '.unpack-';
const completeMarker = z.object({manifestDigest: z.string(), archive: fileIdentity});
const markerOf = (tree: string): string => `${tree}.complete`;

const isComplete = async (tree: string, image: BuilderImage, archive: FileIdentity): Promise<boolean> => {
	const marker = await readCacheRecord(markerOf(tree), completeMarker);
	return marker !== undefined && marker.manifestDigest === image.manifestDigest && sameIdentity(marker.archive, archive) && await checkCacheFolder(tree);
};

export const builderRootfs = async (image: BuilderImage, signal?: AbortSignal): Promise<string> => {
	const archive = await verifyStoredArchive(image);
	const final = path.join(await ensureCacheFolder(rootfsDir()), image.manifestDigest.replace('sha256:', ''));
	if (await isComplete(final, image, archive)) {
		return final;
	}

	// One unpack per image at a time; a second build waits for it, then finds it complete.
	return withLock(`${final}.lock`, () => undefined, async () => {
		if (await isComplete(final, image, archive)) {
			return final;
		}

		await fs.rm(markerOf(final), {force: true});
		await removeTree(final);
		const owned = await createOwnedDir(path.join(rootfsDir(), `${unpackPrefix}${process.pid}-${Date.now()}`), 'rootfs-unpack');
		// A signal ends the run without waiting for the unpack: its folder goes with the exit cleanups.
		const forget = addExitCleanup(owned.remove);
		try {
			const tree = path.join(owned.path, 'rootfs');
			await unpackImageArchive(archivePathFor(image.inputHash), tree, signal === undefined ? {} : {signal});
			await assertArchiveUnchanged(image, archive);
			await fs.rename(tree, final);
		} finally {
			await owned.remove();
			forget();
		}

		await writeCacheJson(markerOf(final), {manifestDigest: image.manifestDigest, archive});
		return final;
	});
};

/** Removes unpack folders of killed runs. */
export const reapRootfsUnpacks = async (): Promise<string[]> => reapOwnedDirs(rootfsDir(), name => name.startsWith(unpackPrefix));
