/**
 * `--output type=tar,dest=FILE|-`: the root filesystem as one tar (several platforms: a
 * top-level folder per platform, linux_arm64/…). A file is replaced atomically; `-` streams to
 * stdout and writes nothing else there.
 */
import {createWriteStream} from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import {Readable, type Writable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import {writeFileAtomically} from '../oci/archive.js';
import {streamTo} from './atomic.js';
import {layerCompression, selectImages, verifyLayers} from './images.js';
import {rootfsTar} from './rootfs-tar.js';

export interface TarOutputOptions {
	/** Platform ids to write (default: every image in the layout); more than one → a folder per platform. */
	readonly platforms?: readonly string[];
	/** Where dest `-` streams to; process.stdout unless given. */
	readonly stdout?: Writable;
}

export const writeTarOutput = async (layoutDir: string, dest: string, options: TarOutputOptions = {}): Promise<void> => {
	const images = await selectImages(layoutDir, options.platforms);
	await verifyLayers(layoutDir, images);
	for (const layer of images.flatMap(image => image.manifest.layers)) {
		// eslint-disable-next-line no-await-in-loop
		await layerCompression(layoutDir, layer); // zstd is refused before the first byte is written
	}

	if (dest === '-') {
		await streamTo(rootfsTar(layoutDir, images), options.stdout ?? process.stdout);
		return;
	}

	await fs.mkdir(path.dirname(path.resolve(dest)), {recursive: true});
	await writeFileAtomically(dest, async partial => {
		await pipeline(Readable.from(rootfsTar(layoutDir, images)), createWriteStream(partial));
	});
};
