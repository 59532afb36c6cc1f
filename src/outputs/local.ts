/**
 * `--output type=local,dest=DIR`: the image's root filesystem as files. One platform: DIR is
 * the root filesystem; several: DIR/linux_arm64/, DIR/linux_arm_v7/… (buildx's names). Layers
 * are applied in order with OCI whiteouts (src/oci/unpack.ts applyLayer); as root, ownership is
 * kept. DIR is replaced only once the new tree is complete.
 *
 * node-tar, guarding against archives that write outside their folder, strips the leading `/`
 * of absolute symlink targets and drops symlinks whose target leaves the folder or passes
 * through another symlink; in a root filesystem those are ordinary (`/bin/sh → /usr/bin/dash`,
 * `/lib → usr/lib` then `…/libc.so → /lib/…`). So each layer's symlinks are recreated
 * afterwards exactly as recorded, and only where their own parent folders are real folders
 * inside the root (never through a symlink).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import * as tar from 'tar';
import {blobPath} from '../oci/layout.js';
import {applyLayer} from '../oci/unpack.js';
import {replaceDirAtomically} from './atomic.js';
import {layerCompression, selectImages, verifyLayers, type SelectedImage} from './images.js';

export interface LocalOutputOptions {
	/** Platform ids to write (default: every image in the layout); more than one → a folder per platform. */
	readonly platforms?: readonly string[];
}

interface Symlink {
	readonly name: string;
	readonly target: string;
	readonly uid: number | undefined;
	readonly gid: number | undefined;
	readonly mtime: Date | undefined;
}

const symlinksOf = async (layer: string): Promise<Symlink[]> => {
	const found = new Map<string, Symlink>();
	await tar.t({
		file: layer,
		maxDecompressionRatio: Number.POSITIVE_INFINITY,
		onReadEntry(entry) {
			const name = path.posix.normalize(`/${entry.path}`).replace(/^\/+|\/+$/g, '');
			if (entry.type === 'SymbolicLink' && entry.linkpath !== undefined && name !== '' && !name.split('/').includes('..')) {
				found.set(name, {name, target: entry.linkpath, uid: entry.uid, gid: entry.gid, mtime: entry.mtime});
			} else {
				found.delete(name);
			}
		},
	});
	return [...found.values()];
};

/** Whether every folder from `root` down to `name`'s parent is a real folder (no symlink on the way). */
const parentIsReal = async (root: string, name: string): Promise<boolean> => {
	let folder = root;
	for (const part of name.split('/').slice(0, -1)) {
		folder = path.join(folder, part);
		// eslint-disable-next-line no-await-in-loop
		const stat = await fs.lstat(folder).catch(() => undefined);
		if (stat === undefined || !stat.isDirectory()) {
			return false;
		}
	}

	return true;
};

const restoreSymlinks = async (layer: string, root: string): Promise<void> => {
	const asRoot = process.getuid?.() === 0;
	for (const link of await symlinksOf(layer)) {
		// eslint-disable-next-line no-await-in-loop
		if (!await parentIsReal(root, link.name)) {
			continue;
		}

		const file = path.join(root, link.name);
		// eslint-disable-next-line no-await-in-loop
		const current = await fs.lstat(file).catch(() => undefined);
		// eslint-disable-next-line no-await-in-loop
		if (current?.isSymbolicLink() && await fs.readlink(file) === link.target) {
			continue;
		}

		// eslint-disable-next-line no-await-in-loop
		await fs.rm(file, {recursive: true, force: true});
		// eslint-disable-next-line no-await-in-loop
		await fs.symlink(link.target, file);
		if (asRoot && link.uid !== undefined && link.gid !== undefined) {
			// eslint-disable-next-line no-await-in-loop
			await fs.lchown(file, link.uid, link.gid);
		}

		if (link.mtime !== undefined) {
			// eslint-disable-next-line no-await-in-loop
			await fs.lutimes(file, link.mtime, link.mtime).catch(() => undefined);
		}
	}
};

const unpackImage = async (layoutDir: string, image: SelectedImage, root: string): Promise<void> => {
	for (const layer of image.manifest.layers) {
		const file = blobPath(layoutDir, layer.digest);
		// eslint-disable-next-line no-await-in-loop
		await layerCompression(layoutDir, layer); // refuses zstd with a UserError
		// eslint-disable-next-line no-await-in-loop
		await applyLayer(file, root);
		// eslint-disable-next-line no-await-in-loop
		await restoreSymlinks(file, root);
	}
};

export const writeLocalOutput = async (layoutDir: string, destDir: string, options: LocalOutputOptions = {}): Promise<void> => {
	const images = await selectImages(layoutDir, options.platforms);
	await verifyLayers(layoutDir, images);
	await replaceDirAtomically(destDir, async partial => {
		if (images.length === 1) {
			await unpackImage(layoutDir, images[0]!, partial);
			return;
		}

		for (const image of images) {
			const root = path.join(partial, image.folder);
			// eslint-disable-next-line no-await-in-loop
			await fs.mkdir(root, {mode: 0o755});
			// eslint-disable-next-line no-await-in-loop
			await fs.chmod(root, 0o755);
			// eslint-disable-next-line no-await-in-loop
			await unpackImage(layoutDir, image, root);
		}
	});
};
