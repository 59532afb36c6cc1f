/**
 * A multi-platform OCI archive split into one archive per platform, each tagged TAG-ARCH
 * (e.g. demo:latest-ppc64le), for image stores that refuse an image index on load.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import * as tar from 'tar';
import {imagesUnder, packLayoutToArchive, readIndexJson} from '../../oci/index.js';

/** demo → demo:latest-ppc64le; registry:5000/app:1 → registry:5000/app:1-arm-v7. */
export const perPlatformTag = (tag: string, platform: string): string => {
	const suffix = platform.split('/').slice(1).join('-');
	const lastSlash = tag.lastIndexOf('/');
	const colon = tag.indexOf(':', lastSlash + 1);
	return colon === -1 ? `${tag}:latest-${suffix}` : `${tag}-${suffix}`;
};

export interface PlatformArchive {
	readonly platform: string;
	readonly archivePath: string;
	readonly tags: readonly string[];
}

export const splitArchiveByPlatform = async (archivePath: string, workDir: string, tags: readonly string[]): Promise<PlatformArchive[]> => {
	const whole = path.join(workDir, 'whole');
	await fs.mkdir(whole, {recursive: true});
	await tar.x({file: archivePath, cwd: whole});
	const [top] = (await readIndexJson(whole)).manifests;
	if (top === undefined) {
		return [];
	}

	const images = await imagesUnder(whole, top);
	// Each platform's layout has its own blobs folder of hard links (blobs are read only as regular
	// files inside their layout, never through a symlinked folder); one platform at a time.
	const wholeBlobs = path.join(whole, 'blobs', 'sha256');
	const blobNames = await fs.readdir(wholeBlobs);
	const archives: PlatformArchive[] = [];
	for (const [index, image] of images.entries()) {
		const layout = path.join(workDir, `platform-${index}`);
		const blobs = path.join(layout, 'blobs', 'sha256');
		await fs.mkdir(blobs, {recursive: true});
		for (const name of blobNames) {
			await fs.link(path.join(wholeBlobs, name), path.join(blobs, name));
		}

		await fs.copyFile(path.join(whole, 'oci-layout'), path.join(layout, 'oci-layout'));
		const {platform: _platform, ...descriptor} = image.descriptor;
		await fs.writeFile(path.join(layout, 'index.json'), JSON.stringify({schemaVersion: 2, manifests: [descriptor]}));
		const platformTags = tags.map(tag => perPlatformTag(tag, image.platform));
		const platformArchive = path.join(workDir, `platform-${index}.tar`);
		await packLayoutToArchive(layout, platformArchive, {tags: platformTags});
		archives.push({platform: image.platform, archivePath: platformArchive, tags: platformTags});
	}

	return archives;
};
