/**
 * `container image …`: an OCI content store (blobs/sha256/…) plus image records naming a
 * top-level descriptor (a manifest, or an index of several platforms). `load` takes an OCI
 * image-layout tar only, as the real CLI does: a docker-save archive has no oci-layout file and
 * is refused the way apple/container#1103 shows.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as tar from 'tar';
import {blobPath, normaliseReference, verifyLayout, writeFileAtomically} from '../../../src/oci/index.js';
import {
	configSchema, containerdNameAnnotation, indexSchema, isIndexMediaType, manifestSchema, refNameAnnotation,
	type ImageConfig, type ImageManifest,
} from '../../../src/oci/schema.js';
import {parseArgs, table, type CommandSpec, type OptionSpec} from './args.js';
import {
	CliError, imageRecords, paths, readJson, requireSystem, versionAtLeast, writeJsonAtomically,
	type DescriptorRecord, type ImageRecord,
} from './state.js';

const loadImages = (): ImageRecord[] => readJson(paths.images(), imageRecords) ?? [];
const saveImages = (images: readonly ImageRecord[]): void => writeJsonAtomically(paths.images(), images);

export const readContentJson = (digest: string): unknown => JSON.parse(fs.readFileSync(blobPath(paths.content(), digest), 'utf8'));

const matches = (image: ImageRecord, wanted: string): boolean =>
	image.reference === wanted
	|| image.reference === normaliseReference(wanted)
	|| image.descriptor.digest === wanted
	|| (wanted.length >= 12 && image.descriptor.digest.replace('sha256:', '').startsWith(wanted.replace('sha256:', '')));

export const findImage = (wanted: string): ImageRecord => {
	const image = loadImages().find(candidate => matches(candidate, wanted));
	if (image === undefined) {
		throw new CliError(`notFound: "image ${wanted} not found"`);
	}

	return image;
};

export interface PlatformManifest {
	readonly descriptor: DescriptorRecord;
	readonly manifest: ImageManifest;
	readonly config: ImageConfig;
	readonly platform: {os: string; architecture: string; variant?: string};
}

/** Every platform manifest under a descriptor of the content store. */
export const manifestsOf = (descriptor: DescriptorRecord): PlatformManifest[] => {
	if (isIndexMediaType(descriptor.mediaType)) {
		const index = indexSchema.parse(readContentJson(descriptor.digest));
		return index.manifests.flatMap(child => manifestsOf(child));
	}

	if (!descriptor.mediaType.includes('manifest')) {
		return [];
	}

	const manifest = manifestSchema.parse(readContentJson(descriptor.digest));
	const config = configSchema.parse(readContentJson(manifest.config.digest));
	if (config.architecture === 'unknown') {
		return []; // attestation manifests
	}

	return [{descriptor, manifest, config, platform: {os: config.os, architecture: config.architecture, ...(config.variant ? {variant: config.variant} : {})}}];
};

const platformString = (platform: {os: string; architecture: string; variant?: string | undefined}): string =>
	[platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');

const imageSize = (image: PlatformManifest): number =>
	image.descriptor.size + image.manifest.config.size + image.manifest.layers.reduce((sum, layer) => sum + layer.size, 0);

/** The JSON element of `image list --format json` / `image inspect` (1.x ImageResource; 0.x: reference + descriptor). */
const imageJson = (image: ImageRecord): unknown => {
	const descriptor = {mediaType: image.descriptor.mediaType, digest: image.descriptor.digest, size: image.descriptor.size};
	if (!versionAtLeast('1.0.0')) {
		return {reference: image.reference, descriptor};
	}

	const variants = manifestsOf(image.descriptor);
	const created = variants.map(variant => (variant.config as {created?: string}).created).filter((date): date is string => typeof date === 'string').sort()[0];
	return {
		id: image.descriptor.digest,
		name: image.reference,
		creationDate: created ?? new Date(0).toISOString(),
		labels: {},
		configuration: {reference: image.reference, descriptor},
		index: descriptor,
		variants: variants.map(variant => ({platform: variant.platform, size: imageSize(variant), config: variant.config})),
	};
};

const copyBlob = (fromLayout: string, digest: string, toLayout: string): void => {
	const target = blobPath(toLayout, digest);
	if (fs.existsSync(target)) {
		return;
	}

	fs.mkdirSync(path.dirname(target), {recursive: true});
	const partial = `${target}.${crypto.randomBytes(4).toString('hex')}.partial`;
	fs.copyFileSync(blobPath(fromLayout, digest), partial);
	fs.renameSync(partial, target);
};

const referenceOf = (annotations: Record<string, string> | undefined): string | undefined => {
	const containerd = annotations?.[containerdNameAnnotation];
	if (containerd) {
		return containerd;
	}

	const refName = annotations?.[refNameAnnotation];
	return refName ? normaliseReference(refName) : undefined;
};

const load = async (input: string | undefined): Promise<string> => {
	if (input === undefined) {
		throw new CliError('simulator: image load reads --input/-i only (stdin is not simulated)');
	}

	const file = path.resolve(input);
	if (!fs.existsSync(file)) {
		throw new CliError('', 1, `File does not exist ${file}\n`);
	}

	fs.mkdirSync(paths.tmp(), {recursive: true});
	const staging = path.join(paths.tmp(), crypto.randomUUID().toUpperCase());
	fs.mkdirSync(staging);
	try {
		await tar.x({file, cwd: staging});
		if (!fs.existsSync(path.join(staging, 'oci-layout')) || !fs.existsSync(path.join(staging, 'index.json'))) {
			throw new CliError(`notFound: "${path.join(staging, 'oci-layout')}"`);
		}

		const digests = await verifyLayout(staging);
		for (const digest of digests) {
			copyBlob(staging, digest, paths.content());
		}

		const index = indexSchema.parse(JSON.parse(fs.readFileSync(path.join(staging, 'index.json'), 'utf8')));
		// Whether the real store takes a multi-platform index is UNVERIFIED: tests set this to
		// play a store that refuses one (the error text is the simulator's own).
		if (process.env['CONTAINER_SIM_REFUSE_INDEX'] === '1' && index.manifests.some(entry => isIndexMediaType(entry.mediaType))) {
			throw new CliError('unsupported: "multi-platform image index (simulated refusal: CONTAINER_SIM_REFUSE_INDEX=1)"');
		}

		const loaded: ImageRecord[] = [];
		for (const entry of index.manifests) {
			const reference = referenceOf(entry.annotations);
			if (reference !== undefined) {
				const {annotations: _annotations, ...descriptor} = entry;
				loaded.push({reference, descriptor, loadedAt: new Date().toISOString()});
			}
		}

		if (loaded.length === 0) {
			throw new CliError(`notFound: "no image reference in ${file} (index.json manifests carry no ${containerdNameAnnotation} or ${refNameAnnotation} annotation)"`);
		}

		const names = new Set(loaded.map(image => image.reference));
		saveImages([...loadImages().filter(image => !names.has(image.reference)), ...loaded]);
		return `Loaded images:\n${loaded.map(image => image.reference).join('\n')}\n`;
	} finally {
		fs.rmSync(staging, {recursive: true, force: true});
	}
};

const reachable = (descriptor: DescriptorRecord, into: Set<string>): void => {
	into.add(descriptor.digest);
	if (isIndexMediaType(descriptor.mediaType)) {
		for (const child of indexSchema.parse(readContentJson(descriptor.digest)).manifests) {
			reachable(child, into);
		}
	} else if (descriptor.mediaType.includes('manifest')) {
		const manifest = manifestSchema.parse(readContentJson(descriptor.digest));
		for (const blob of [manifest.config, ...manifest.layers]) {
			into.add(blob.digest);
		}
	}
};

const save = async (output: string, references: readonly string[]): Promise<void> => {
	const images = references.map(reference => findImage(reference));
	fs.mkdirSync(paths.tmp(), {recursive: true});
	const layout = fs.mkdtempSync(path.join(paths.tmp(), 'save-'));
	try {
		const digests = new Set<string>();
		for (const image of images) {
			reachable(image.descriptor, digests);
		}

		for (const digest of digests) {
			copyBlob(paths.content(), digest, layout);
		}

		const manifests = images.map(image => {
			const tag = image.reference.slice(image.reference.lastIndexOf('/') + 1).split(':')[1] ?? 'latest';
			return {...image.descriptor, annotations: {[containerdNameAnnotation]: image.reference, [refNameAnnotation]: tag}};
		});
		fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}\n');
		fs.writeFileSync(path.join(layout, 'index.json'), `${JSON.stringify({schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests})}\n`);
		const files = ['oci-layout', 'index.json', ...[...digests].sort().map(digest => path.posix.join('blobs', ...digest.split(':')))];
		await writeFileAtomically(path.resolve(output), async partial => {
			await tar.c({cwd: layout, file: partial, portable: true, noDirRecurse: true}, files);
		});
	} finally {
		fs.rmSync(layout, {recursive: true, force: true});
	}
};

const formatOption: OptionSpec = {names: ['--format'], value: true};
const spec = <K extends string>(sub: string, usage: string, options: Record<K, OptionSpec>): CommandSpec & {options: Record<K, OptionSpec>} =>
	({path: `container image ${sub}`, usage: `container image ${usage}`, options});

const checkFormat = (format: string | undefined): 'json' | 'table' => {
	if (format === undefined || format === 'table') {
		return 'table';
	}

	if (format === 'json') {
		return 'json';
	}

	throw new CliError(`The value '${format}' is invalid for '--format <format>'`, 64);
};

/** Runs `container image SUB …`; returns what goes to stdout. */
export const imageCommand = async (argv: readonly string[]): Promise<string> => {
	const [sub, ...rest] = argv;
	switch (sub) {
		case 'load': {
			const parsed = parseArgs(spec('load', 'load [--input <input>] [--debug]', {input: {names: ['-i', '--input'], value: true}}), rest);
			requireSystem('failed to load images');
			return load(parsed.value('input'));
		}

		case 'save': {
			const command = spec('save', 'save [--arch <arch>] [--os <os>] --output <output> [--platform <platform>] [--debug] <references> ...', {
				output: {names: ['-o', '--output'], value: true}, arch: {names: ['-a', '--arch'], value: true}, os: {names: ['--os'], value: true}, platform: {names: ['--platform'], value: true},
			});
			const parsed = parseArgs(command, rest);
			const output = parsed.value('output');
			if (output === undefined) {
				throw new CliError(`Missing expected argument '--output <output>'\nUsage: ${command.usage}\n  See '${command.path} --help' for more information.`, 64);
			}

			requireSystem('failed to save images');
			await save(output, parsed.positionals);
			return '';
		}

		case 'list':
		case 'ls': {
			const parsed = parseArgs(spec('list', 'list [--format <format>] [--quiet] [--verbose] [--debug]', {
				format: formatOption, quiet: {names: ['-q', '--quiet'], value: false}, verbose: {names: ['-v', '--verbose'], value: false},
			}), rest);
			const format = checkFormat(parsed.value('format'));
			requireSystem('failed to list images');
			const images = loadImages();
			if (format === 'json') {
				return `${JSON.stringify(images.map(image => imageJson(image)))}\n`;
			}

			if (parsed.flag('quiet')) {
				return images.map(image => `${image.reference}\n`).join('');
			}

			const rows = images.map(image => {
				const colon = image.reference.lastIndexOf(':');
				const slash = image.reference.lastIndexOf('/');
				const [name, tag] = colon > slash ? [image.reference.slice(0, colon), image.reference.slice(colon + 1)] : [image.reference, '<none>'];
				return [name, tag, image.descriptor.digest.slice(7, 19)];
			});
			return `${table([['NAME', 'TAG', 'DIGEST'], ...rows])}\n`;
		}

		case 'inspect': {
			const parsed = parseArgs(spec('inspect', 'inspect [--debug] <images> ...', {}), rest);
			if (parsed.positionals.length === 0) {
				throw new CliError('Missing expected argument \'<images> ...\'', 64);
			}

			requireSystem('failed to inspect images');
			return `${JSON.stringify(parsed.positionals.map(name => imageJson(findImage(name))))}\n`;
		}

		case 'tag': {
			const parsed = parseArgs(spec('tag', 'tag <source> <target> [--debug]', {}), rest);
			const [source, target] = parsed.positionals;
			if (source === undefined || target === undefined) {
				throw new CliError('Missing expected argument \'<target>\'', 64);
			}

			requireSystem('failed to tag image');
			const image = findImage(source);
			const reference = normaliseReference(target);
			saveImages([...loadImages().filter(candidate => candidate.reference !== reference), {...image, reference, loadedAt: new Date().toISOString()}]);
			return '';
		}

		case 'delete':
		case 'rm': {
			const parsed = parseArgs(spec('delete', 'delete [--all] [--force] [--debug] [<images> ...]', {
				all: {names: ['-a', '--all'], value: false}, force: {names: ['-f', '--force'], value: false, since: '0.9.0'},
			}), rest);
			requireSystem('failed to delete images');
			const images = loadImages();
			const doomed = parsed.flag('all') ? images : parsed.positionals.map(name => findImage(name));
			const gone = new Set(doomed.map(image => image.reference));
			saveImages(images.filter(image => !gone.has(image.reference)));
			return doomed.map(image => `${image.reference}\n`).join('');
		}

		default:
			throw new CliError(`simulator: unknown or unsimulated subcommand 'container image ${sub ?? ''}'`, 64);
	}
};

export const platformOf = (image: ImageRecord, wanted: string): PlatformManifest => {
	const all = manifestsOf(image.descriptor);
	const found = all.length === 1 && !isIndexMediaType(image.descriptor.mediaType) ? all[0] : all.find(candidate => platformString(candidate.platform) === wanted || platformString({...candidate.platform, variant: undefined}) === wanted);
	if (found === undefined || platformString({...found.platform, variant: undefined}) !== wanted.split('/').slice(0, 2).join('/')) {
		throw new CliError(`unsupported: "image ${image.reference} has no platform ${wanted} (it has ${all.map(candidate => platformString(candidate.platform)).join(', ') || 'none'})"`);
	}

	return found;
};

