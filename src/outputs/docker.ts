/**
 * `--output type=docker`: a `docker save` style archive that `docker load` (and podman load,
 * skopeo docker-archive:) reads: manifest.json `[{Config, RepoTags, Layers}]`, the image config
 * as `<config digest hex>.json` byte for byte, and each layer uncompressed as
 * `<diff_id hex>/layer.tar`, checked against the config's diff_ids. One platform only.
 */
import {createWriteStream} from 'node:fs';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {Readable, Transform, type Writable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import * as tar from 'tar';
import {UserError} from '../errors.js';
import {normaliseReference} from '../oci/archive.js';
import {readBlob} from '../oci/layout.js';
import {configSchema} from '../oci/schema.js';
import {partialPathOf, trackPartial} from '../runs/partials.js';
import {isNoSpace, noSpaceError, resolveFileDestination, writeFileDestination} from './destination.js';
import {openLayer, outputErrorCode, selectImages, verifyLayers} from './images.js';

export interface DockerArchiveOptions {
	/** Image references for RepoTags (example/app:1, registry:5000/app); none: an untagged image. */
	readonly tags?: readonly string[];
	/** Platform ids to choose from a multi-platform layout; the choice must be exactly one image. */
	readonly platforms?: readonly string[];
	/** Where dest `-` streams to; process.stdout unless given. */
	readonly stdout?: Writable;
}

export interface DockerManifestEntry {
	Config: string;
	RepoTags: string[];
	Layers: string[];
}

/** example/app:1 → example/app:1, debian → debian:latest, docker.io/library/x:y → x:y (the names docker save writes). */
export const repoTagOf = (reference: string): string => {
	if (reference.includes('@')) {
		throw new UserError(`--output type=docker cannot name an image by digest: ${reference}`, {hint: 'tag it by name, e.g. -t example/app:1', code: outputErrorCode});
	}

	return normaliseReference(reference).replace(/^docker\.io\/library\/(?=[^/]+$)/, '').replace(/^docker\.io\//, '');
};

const hexOf = (digest: string): string => digest.slice(digest.indexOf(':') + 1);

/** Stages the archive's files in `staging`; returns their paths in archive order. */
const stage = async (layoutDir: string, staging: string, options: DockerArchiveOptions): Promise<string[]> => {
	const images = await selectImages(layoutDir, options.platforms);
	if (images.length !== 1) {
		throw new UserError(`type=docker holds one platform; this build has ${images.length}: ${images.map(image => image.platform).join(', ')}`, {
			hint: 'use --output type=oci for a multi-platform image, or build one --platform',
			code: outputErrorCode,
		});
	}

	const repoTags = [...new Set((options.tags ?? []).map(repoTagOf))];
	const image = images[0]!;
	await verifyLayers(layoutDir, [image]);
	const configBytes = await readBlob(layoutDir, image.manifest.config);
	const diffIds = configSchema.parse(JSON.parse(configBytes.toString('utf8'))).rootfs.diff_ids;
	if (diffIds.length !== image.manifest.layers.length) {
		throw new Error(`image ${image.descriptor.digest} lists ${image.manifest.layers.length} layers but its config ${diffIds.length} diff_ids`);
	}

	const configFile = `${hexOf(image.manifest.config.digest)}.json`;
	await fs.writeFile(path.join(staging, configFile), configBytes);
	const layerFiles: string[] = [];
	for (const [position, layer] of image.manifest.layers.entries()) {
		const diffId = diffIds[position]!;
		const file = `${hexOf(diffId)}/layer.tar`;
		layerFiles.push(file);
		if (layerFiles.indexOf(file) !== position) {
			continue; // the same layer twice (empty layers): one file, named twice in Layers
		}

		await fs.mkdir(path.join(staging, hexOf(diffId)));
		const hash = crypto.createHash('sha256');
		const hashing = new Transform({
			transform(chunk: Buffer, _encoding, callback) {
				hash.update(chunk);
				callback(undefined, chunk);
			},
		});
		await pipeline(await openLayer(layoutDir, layer), hashing, createWriteStream(path.join(staging, file)));
		const actual = `sha256:${hash.digest('hex')}`;
		if (actual !== diffId) {
			throw new Error(`layer ${layer.digest} uncompresses to ${actual}, but the config's diff_id ${position} is ${diffId}`);
		}
	}

	const manifest: DockerManifestEntry[] = [{Config: configFile, RepoTags: repoTags, Layers: layerFiles}];
	await fs.writeFile(path.join(staging, 'manifest.json'), `${JSON.stringify(manifest)}\n`);
	return ['manifest.json', configFile, ...new Set(layerFiles.map(file => path.posix.dirname(file)))];
};

const packOptions = (staging: string) => ({cwd: staging, portable: true, mtime: new Date(0)});

/**
 * Writes a `docker load` archive of the layout's one image to `dest` (./destination.ts: a file
 * is replaced atomically; a device, FIFO or `-` (stdout) written as a stream). The files are
 * staged first in a tracked partial folder: beside a file dest (the space is needed there
 * anyway), else in the temp folder. A layout with several platforms is refused unless
 * `platforms` picks one.
 */
export const writeDockerArchive = async (layoutDir: string, dest: string, options: DockerArchiveOptions = {}): Promise<void> => {
	const destination = resolveFileDestination(dest);
	const staging = await trackPartial(partialPathOf(destination.kind === 'replace' ? `${destination.file}-staging` : path.join(os.tmpdir(), 'exobuild-docker')));
	try {
		let files: string[];
		try {
			await fs.mkdir(staging.path, {mode: 0o700});
			files = await stage(layoutDir, staging.path, options);
		} catch (error) {
			throw isNoSpace(error) ? noSpaceError(path.dirname(staging.path), error) : error;
		}

		await writeFileDestination(dest, async out => {
			await pipeline(Readable.from(tar.c(packOptions(staging.path), files) as unknown as AsyncIterable<Buffer>), out, {end: false});
		}, options.stdout === undefined ? {} : {stdout: options.stdout});
	} finally {
		await staging.discard();
	}
};
