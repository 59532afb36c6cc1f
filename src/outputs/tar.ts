/**
 * `--output type=tar,dest=FILE|-`: the root filesystem as one tar (several platforms: a
 * top-level folder per platform, linux_arm64/…), written by ./destination.ts: a file is replaced
 * atomically; a device, FIFO or `-` (stdout) written as a stream, and nothing else written there.
 */
import {Readable, type Writable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import {writeFileDestination} from './destination.js';
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
		await layerCompression(layoutDir, layer); // zstd is refused before the first byte is written
	}

	await writeFileDestination(dest, async out => {
		await pipeline(Readable.from(rootfsTar(layoutDir, images)), out, {end: false});
	}, options.stdout === undefined ? {} : {stdout: options.stdout});
};
