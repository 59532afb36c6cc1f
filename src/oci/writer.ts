/**
 * Writing OCI image layouts: gzipped layers from tar files, configs, manifests, and an
 * index.json naming one image or a multi-platform index. Content-addressed, so the same inputs
 * give the same digests.
 */
import crypto from 'node:crypto';
import {createReadStream, createWriteStream} from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import {pipeline} from 'node:stream/promises';
import zlib from 'node:zlib';
import {blobPath, sha256} from './layout.js';
import {mediaTypes, refNameAnnotation, type Descriptor, type ImageIndex, type ImageManifest} from './schema.js';

export const fileDigest = async (file: string): Promise<string> => {
	const hash = crypto.createHash('sha256');
	await pipeline(createReadStream(file), hash);
	return `sha256:${hash.digest('hex')}`;
};

export interface ImageSpec {
	/** Layers already in the layout (gzipped blobs), lowest first; they go below `layers`. */
	readonly precompressed?: ReadonlyArray<{readonly descriptor: Descriptor; readonly diffId: string}>;
	/** Uncompressed layer tars, lowest first. */
	readonly layers: readonly string[];
	readonly architecture: string;
	readonly variant?: string;
	readonly env?: readonly string[];
	readonly entrypoint?: readonly string[];
	readonly cmd?: readonly string[];
	readonly labels?: Readonly<Record<string, string>>;
}

export class LayoutWriter {
	readonly dir: string;

	constructor(dir: string) {
		this.dir = dir;
	}

	async addBlob(data: Buffer | string, mediaType: string): Promise<Descriptor> {
		const buffer = Buffer.isBuffer(data) ? data : Buffer.from(data);
		const digest = sha256(buffer);
		const file = blobPath(this.dir, digest);
		await fs.mkdir(path.dirname(file), {recursive: true});
		await fs.writeFile(file, buffer);
		return {mediaType, digest, size: buffer.length};
	}

	/** Gzips a layer tar into the layout; returns its descriptor and diff_id. */
	async addLayer(tarFile: string): Promise<{descriptor: Descriptor; diffId: string}> {
		await fs.mkdir(path.join(this.dir, 'blobs', 'sha256'), {recursive: true});
		const temporary = path.join(this.dir, 'blobs', `.layer-${crypto.randomBytes(6).toString('hex')}`);
		const uncompressed = crypto.createHash('sha256');
		const compressed = crypto.createHash('sha256');
		let size = 0;
		const source = createReadStream(tarFile);
		source.on('data', chunk => uncompressed.update(chunk));
		const gzip = zlib.createGzip({level: 6});
		gzip.on('data', (chunk: Buffer) => {
			compressed.update(chunk);
			size += chunk.length;
		});
		await pipeline(source, gzip, createWriteStream(temporary));
		const digest = `sha256:${compressed.digest('hex')}`;
		await fs.rename(temporary, blobPath(this.dir, digest));
		return {descriptor: {mediaType: mediaTypes.layerGzip, digest, size}, diffId: `sha256:${uncompressed.digest('hex')}`};
	}

	/** Adds an image (layers, config, manifest); returns the manifest descriptor with its platform. */
	async addImage(spec: ImageSpec): Promise<Descriptor> {
		const layers: Array<{descriptor: Descriptor; diffId: string}> = [...(spec.precompressed ?? [])];
		for (const layer of spec.layers) {
			layers.push(await this.addLayer(layer));
		}

		const config = {
			architecture: spec.architecture,
			os: 'linux',
			...(spec.variant === undefined ? {} : {variant: spec.variant}),
			config: {
				Env: [...(spec.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'])],
				...(spec.entrypoint === undefined ? {} : {Entrypoint: [...spec.entrypoint]}),
				...(spec.cmd === undefined ? {} : {Cmd: [...spec.cmd]}),
				...(spec.labels === undefined ? {} : {Labels: {...spec.labels}}),
			},
			rootfs: {type: 'layers', diff_ids: layers.map(layer => layer.diffId)},
			history: layers.map(() => ({created_by: 'exobuild'})),
		};
		const configDescriptor = await this.addBlob(JSON.stringify(config), mediaTypes.config);
		const manifest: ImageManifest = {schemaVersion: 2, mediaType: mediaTypes.manifest, config: configDescriptor, layers: layers.map(layer => layer.descriptor)};
		const descriptor = await this.addBlob(JSON.stringify(manifest), mediaTypes.manifest);
		return {...descriptor, platform: {architecture: spec.architecture, os: 'linux', ...(spec.variant === undefined ? {} : {variant: spec.variant})}};
	}

	async addIndex(manifests: readonly Descriptor[]): Promise<Descriptor> {
		const index: ImageIndex = {schemaVersion: 2, mediaType: mediaTypes.index, manifests: [...manifests]};
		return this.addBlob(JSON.stringify(index), mediaTypes.index);
	}

	/** Writes oci-layout and index.json naming `top` (tagged `tag` when given). */
	/** Writes index.json (one entry: `top`, named `tag` if given, plus `annotations`) and oci-layout. */
	async finish(top: Descriptor, tag?: string, annotations: Readonly<Record<string, string>> = {}): Promise<void> {
		const {platform: _platform, ...entry} = top;
		const names = {...annotations, ...(tag === undefined ? {} : {[refNameAnnotation]: tag})};
		const index: ImageIndex = {schemaVersion: 2, manifests: [{...entry, ...(Object.keys(names).length === 0 ? {} : {annotations: names})}]};
		await fs.writeFile(path.join(this.dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}\n');
		await fs.writeFile(path.join(this.dir, 'index.json'), `${JSON.stringify(index)}\n`);
	}
}
