/**
 * `--output type=local,dest=DIR`: the image's root filesystem as files. One platform: DIR is
 * the root filesystem; several: DIR/linux_arm64/, DIR/linux_arm_v7/… (buildx's names). Layers
 * are applied in order with OCI whiteouts (src/oci/unpack.ts applyLayer); as root, ownership is
 * kept. DIR is replaced only once the new tree is complete.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {blobPath} from '../oci/layout.js';
import {applyLayer} from '../oci/unpack.js';
import {replaceDirAtomically} from './atomic.js';
import {layerCompression, selectImages, verifyLayers, type SelectedImage} from './images.js';

export interface LocalOutputOptions {
	/** Platform ids to write (default: every image in the layout); more than one → a folder per platform. */
	readonly platforms?: readonly string[];
}

const unpackImage = async (layoutDir: string, image: SelectedImage, root: string): Promise<void> => {
	for (const layer of image.manifest.layers) {
		const file = blobPath(layoutDir, layer.digest);
		// eslint-disable-next-line no-await-in-loop
		await layerCompression(layoutDir, layer); // refuses zstd with a UserError
		// eslint-disable-next-line no-await-in-loop
		await applyLayer(file, root);
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
