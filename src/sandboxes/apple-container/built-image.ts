/**
 * The image `container build` made, out of Apple's store as an archive of one image manifest
 * (what a stored builder is: see src/builder-image/store.ts).
 *
 * Why not `container build -o type=oci,dest=FILE`: the builder shim always writes
 * exports/<buildID>/out.tar; for `oci` the CLI loads the file at `dest` into the store (a file
 * nobody wrote), only the `tar` case moves out.tar to `dest`, and a `dest` that exists is refused
 * ("dest path already exists") — apple/container 1.2.2, Sources/ContainerCommands/BuildCommand.swift
 * and Sources/ContainerBuild/Builder.swift (BuildExport). So: `build -t REF` (loads into the store),
 * then `image save --platform P -o FILE REF` (Sources/ContainerCommands/Image/ImageSave.swift).
 *
 * What `image save` writes (containerization 0.40.1, ImageStore+OCILayout.swift `save`): index.json
 * with one entry per reference, always an image index (the store keeps every image as an index;
 * ImageStore+Import.swift wraps a bare manifest in one), filtered to the platform, annotated with
 * the reference under com.apple.containerization.image.name, io.containerd.image.name and
 * org.opencontainers.image.ref.name. Its blobs are the ones under that index.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import * as tar from 'tar';
import {UserError} from '../../errors.js';
import {imagesUnder, packLayoutToArchive, readIndexJson, userLayout} from '../../oci/index.js';

/**
 * Rewrites the archive `image save` wrote (`saved`) into `dest`: an OCI layout whose index.json
 * names the one manifest of `platform` directly (attestation manifests, unknown/unknown, dropped).
 * `work` is an empty folder the caller removes.
 */
export const saveSinglePlatform = async (saved: string, platform: string, dest: string, work: string): Promise<void> => {
	const layout = path.join(work, 'layout');
	await fs.mkdir(layout, {recursive: true});
	await tar.x({file: saved, cwd: layout, strict: true});
	const source = userLayout(layout, `the archive container image save wrote (${saved})`);
	const index = await readIndexJson(source);
	if (index.manifests.length !== 1) {
		throw new UserError(`container image save wrote ${index.manifests.length} images, not 1`, {hint: 'see docs/macos.md (image save)', code: 'E_CONTAINER_CLI'});
	}

	const images = (await imagesUnder(source, index.manifests[0]!)).filter(image => image.platform === platform);
	const [image, ...more] = images;
	if (image === undefined || more.length > 0) {
		throw new UserError(`container image save wrote ${images.length} images for ${platform}, not 1`, {hint: 'see docs/macos.md (image save)', code: 'E_CONTAINER_CLI'});
	}

	const {platform: _platform, annotations: _annotations, ...descriptor} = image.descriptor;
	await fs.writeFile(path.join(layout, 'index.json'), `${JSON.stringify({schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [descriptor]})}\n`);
	await packLayoutToArchive(layout, dest, {tags: []});
};
