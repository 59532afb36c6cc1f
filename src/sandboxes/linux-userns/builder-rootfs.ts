/**
 * The builder image unpacked once per manifest digest, shared read-only by every sandbox (it is
 * the overlay's lower layer). Unpacking goes to a folder owned by this process and is renamed
 * into place when complete, so a half-unpacked tree is never used and a killed unpack is reaped.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type {BuilderImage} from '../../builder-image/builder-image.js';
import {unpackImageArchive} from '../../oci/unpack.js';
import {runtimeStateDir} from '../../paths.js';
import {addExitCleanup} from '../../runs/exit-cleanups.js';
import {createOwnedDir, reapOwnedDirs} from '../../runs/owned-dir.js';

const rootfsDir = (): string => path.join(runtimeStateDir('linux-userns'), 'rootfs');
const unpackPrefix = '.unpack-';

export const builderRootfs = async (image: BuilderImage): Promise<string> => {
	const final = path.join(rootfsDir(), image.manifestDigest.replace('sha256:', ''));
	if (await fs.stat(path.join(final, 'usr')).then(() => true, () => false)) {
		return final;
	}

	const owned = await createOwnedDir(path.join(rootfsDir(), `${unpackPrefix}${process.pid}-${Date.now()}`), 'rootfs-unpack');
	// A signal ends the run without waiting for the unpack: its folder goes with the exit cleanups.
	const forget = addExitCleanup(owned.remove);
	try {
		const tree = path.join(owned.path, 'rootfs');
		await unpackImageArchive(image.archivePath, tree);
		try {
			await fs.rename(tree, final);
		} catch (error) {
			// Another build unpacked the same image first: use theirs.
			if (!['ENOTEMPTY', 'EEXIST'].includes((error as NodeJS.ErrnoException).code ?? '')) {
				throw error;
			}
		}

		return final;
	} finally {
		await owned.remove();
		forget();
	}
};

/** Removes unpack folders of killed runs. */
export const reapRootfsUnpacks = async (): Promise<string[]> => reapOwnedDirs(rootfsDir(), name => name.startsWith(unpackPrefix));
