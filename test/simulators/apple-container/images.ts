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
import {hostPlatform} from '../../../src/platforms/parse.js';
import {parseArgs, table, type CommandSpec, type OptionSpec} from './args.js';

const hostPlatformArch = (): string => hostPlatform()?.architecture ?? process.arch;
import {
	CliError, imageRecords, paths, readJson, requireSystem, cliJson, versionAtLeast, writeJsonAtomically,
	type DescriptorRecord, type ImageRecord,
} from './state.js';

/** containerization 0.40.1 ContainerizationOCI/AnnotationKeys.swift. */
export const appleNameAnnotation = 'com.apple.containerization.image.name';
const indexMediaType = 'application/vnd.oci.image.index.v1+json';

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

/**
 * The JSON of one image. 0.12.x: `list` prints PrintableImage `{reference, fullSize, descriptor}`
 * (Image/ImageList.swift), `inspect` prints ImageDetail `{name, index, variants: [{platform,
 * config, size}]}` (ContainerResource/Image/ImageDetail.swift), keys in declaration order.
 * 1.0.0+: both print ImageResource `{id, configuration: {creationDate, descriptor, name},
 * variants: [{config, digest, platform, size}]}` with id = the index digest's hex, sorted keys,
 * ISO-8601 dates (ContainerResource/Image/ImageResource.swift, OutputRendering.swift).
 */
const imageJson = (image: ImageRecord, command: 'list' | 'inspect'): unknown => {
	const descriptor = {mediaType: image.descriptor.mediaType, digest: image.descriptor.digest, size: image.descriptor.size};
	const variants = manifestsOf(image.descriptor);
	if (!versionAtLeast('1.0.0')) {
		if (command === 'list') {
			const bytes = image.descriptor.size + variants.reduce((sum, variant) => sum + imageSize(variant), 0);
			return {reference: image.reference, fullSize: `${(bytes / 1e6).toFixed(1)} MB`, descriptor};
		}

		return {name: image.reference, index: descriptor, variants: variants.map(variant => ({platform: variant.platform, config: variant.config, size: imageSize(variant)}))};
	}

	const created = variants.map(variant => (variant.config as {created?: string}).created).filter((date): date is string => typeof date === 'string').sort()[0];
	return {
		id: image.descriptor.digest.replace(/^sha256:/, ''),
		configuration: {name: image.reference, creationDate: created === undefined ? new Date(0).toISOString().replace('.000', '') : new Date(created).toISOString().replace('.000', ''), descriptor},
		variants: variants.map(variant => ({platform: variant.platform, digest: variant.descriptor.digest, size: imageSize(variant), config: variant.config})),
	};
};

const printJson = (value: unknown, pretty = false): string =>
	`${cliJson(value, pretty)}\n`;

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

/** LocalOCILayoutClient.getImageReferencefromDescriptor (containerization 0.40.1): Apple's key, containerd's, then the OCI ref.name. */
const referenceOf = (annotations: Record<string, string> | undefined): string | undefined => {
	const apple = annotations?.[appleNameAnnotation];
	if (apple) {
		return apple;
	}

	const containerd = annotations?.[containerdNameAnnotation];
	if (containerd) {
		return containerd;
	}

	const refName = annotations?.[refNameAnnotation];
	return refName ? normaliseReference(refName) : undefined;
};

/** Writes JSON as a blob of the content store; returns its descriptor fields. */
const putJsonBlob = (value: unknown): {digest: string; size: number} => {
	const bytes = Buffer.from(JSON.stringify(value));
	const digest = `sha256:${crypto.createHash('sha256').update(bytes).digest('hex')}`;
	const target = blobPath(paths.content(), digest);
	if (!fs.existsSync(target)) {
		fs.mkdirSync(path.dirname(target), {recursive: true});
		fs.writeFileSync(`${target}.partial`, bytes);
		fs.renameSync(`${target}.partial`, target);
	}

	return {digest, size: bytes.length};
};

/** The store keeps every image as an index: a bare manifest is wrapped in one (ImageStore+Import.swift, containerization 0.40.1). */
const asIndex = (descriptor: DescriptorRecord): DescriptorRecord => {
	if (isIndexMediaType(descriptor.mediaType)) {
		return descriptor;
	}

	const [only] = manifestsOf(descriptor);
	const platform = only === undefined ? undefined : only.platform;
	const {annotations: _annotations, ...child} = descriptor;
	const blob = putJsonBlob({schemaVersion: 2, mediaType: indexMediaType, manifests: [{...child, ...(platform === undefined ? {} : {platform})}]});
	return {mediaType: indexMediaType, ...blob};
};

/** Paths another process cannot open: the images service, not this CLI, opens the path it is given. */
const processLocal = /^\/(?:dev\/fd|dev\/std(?:in|out|err)|proc\/self\/fd|proc\/\d+\/fd)(?:\/|$)/;

/**
 * `image load [-i FILE]` (Image/ImageLoad.swift): stdin without -i. 0.x prints `Loaded images:`
 * then the references; 1.x the references only. A missing file: 0.x says so on stdout, 1.x logs it;
 * both exit 1.
 */
const load = async (input: string | undefined): Promise<string> => {
	fs.mkdirSync(paths.tmp(), {recursive: true});
	let file: string;
	let fromStdin: string | undefined;
	if (input === undefined) {
		fromStdin = path.join(paths.tmp(), `${crypto.randomUUID().toUpperCase()}.tar`);
		fs.writeFileSync(fromStdin, fs.readFileSync(0));
		file = fromStdin;
	} else {
		file = path.resolve(input);
		if (processLocal.test(file)) {
			// UNKNOWN wording: the apiserver opens the path in its own process, where this fd is not.
			throw new CliError(`notFound: "${file}" (the images service cannot open a file descriptor of the CLI's process)`);
		}

		if (!fs.existsSync(file)) {
			if (versionAtLeast('1.0.0')) {
				throw new CliError(`file does not exist path=${file}`);
			}

			throw new CliError('', 1, `File does not exist ${file}\n`);
		}
	}

	const staging = path.join(paths.tmp(), crypto.randomUUID().toUpperCase());
	fs.mkdirSync(staging);
	try {
		await tar.x({file, cwd: staging});
		if (!fs.existsSync(path.join(staging, 'oci-layout')) || !fs.existsSync(path.join(staging, 'index.json'))) {
			throw new CliError(`notFound: "${path.join(staging, 'oci-layout')}"`);
		}

		// Every blob the index reaches must be there (the import fetches each one).
		const digests = await verifyLayout(staging);
		for (const digest of digests) {
			copyBlob(staging, digest, paths.content());
		}

		const index = indexSchema.parse(JSON.parse(fs.readFileSync(path.join(staging, 'index.json'), 'utf8')));
		// The real store takes a multi-platform index as one image (CONFIRMED, issue 11): tests set
		// this to play a store that refuses one (the error text is the simulator's own).
		if (process.env['CONTAINER_SIM_REFUSE_INDEX'] === '1' && index.manifests.some(entry => isIndexMediaType(entry.mediaType))) {
			throw new CliError('unsupported: "multi-platform image index (simulated refusal: CONTAINER_SIM_REFUSE_INDEX=1)"');
		}

		const loaded: ImageRecord[] = [];
		for (const entry of index.manifests) {
			// No name annotation: `untagged@DIGEST` (LocalOCILayoutClient.getImageReferencefromDescriptor).
			const reference = referenceOf(entry.annotations) ?? `untagged@${entry.digest}`;
			const {annotations: _annotations, ...descriptor} = entry;
			loaded.push({reference, descriptor: asIndex(descriptor), loadedAt: new Date().toISOString()});
		}

		if (loaded.length === 0) {
			throw new CliError('internalError: "failed to import image"');
		}

		const names = new Set(loaded.map(image => image.reference));
		saveImages([...loadImages().filter(image => !names.has(image.reference)), ...loaded]);
		const references = loaded.map(image => `${image.reference}\n`).join('');
		return versionAtLeast('1.0.0') ? references : `Loaded images:\n${references}`;
	} finally {
		fs.rmSync(staging, {recursive: true, force: true});
		if (fromStdin !== undefined) {
			fs.rmSync(fromStdin, {force: true});
		}
	}
};

/** Loads an OCI archive into the store (what `build` does with the builder's out.tar); returns the images. */
export const loadArchive = async (file: string): Promise<string[]> => {
	const printed = await load(file);
	return printed.split('\n').filter(line => line !== '' && line !== 'Loaded images:');
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

const platformMatches = (candidate: {os: string; architecture: string; variant?: string | undefined} | undefined, wanted: string | undefined): boolean => {
	if (candidate === undefined) {
		return false;
	}

	if (wanted === undefined) {
		return true;
	}

	const [os, architecture, variant] = wanted.split('/');
	return candidate.os === os && candidate.architecture === architecture && (variant === undefined || candidate.variant === variant);
};

/**
 * `image save` (Image/ImageSave.swift 1.2.2, containerization 0.40.1 ImageStore+OCILayout.swift
 * `save` and ImageStore+Export.swift): one index.json entry per reference, always an index,
 * filtered to --platform (a new index blob when something was left out; children without a
 * platform are dropped then), annotated with the reference under Apple's, containerd's and the
 * OCI key. A reference without content for the platform is refused.
 */
const save = async (output: string | undefined, references: readonly string[], platform: string | undefined): Promise<void> => {
	const images = references.map(reference => findImage(reference));
	fs.mkdirSync(paths.tmp(), {recursive: true});
	const layout = fs.mkdtempSync(path.join(paths.tmp(), 'save-'));
	try {
		const digests = new Set<string>();
		const manifests = images.map(image => {
			const index = indexSchema.parse(readContentJson(image.descriptor.digest));
			const kept = index.manifests.filter(child => platformMatches(child.platform, platform));
			if (platform !== undefined && kept.length === 0) {
				const available = index.manifests.map(child => (child.platform === undefined ? undefined : [child.platform.os, child.platform.architecture, child.platform.variant].filter(Boolean).join('/')))
					.filter((id): id is string => id !== undefined && id !== 'unknown/unknown');
				throw new CliError(`invalidArgument: "image ${image.reference} has no content for platform ${platform}; available platforms: ${available.join(', ') || 'none'}"`);
			}

			let descriptor: DescriptorRecord = image.descriptor;
			if (kept.length !== index.manifests.length) {
				descriptor = {mediaType: image.descriptor.mediaType, ...putJsonBlob({...index, manifests: kept})};
			}

			reachable(descriptor, digests);
			return {...descriptor, annotations: {[appleNameAnnotation]: image.reference, [containerdNameAnnotation]: image.reference, [refNameAnnotation]: image.reference}};
		});
		for (const digest of digests) {
			copyBlob(paths.content(), digest, layout);
		}

		fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
		fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify({schemaVersion: 2, manifests}));
		const files = ['oci-layout', 'index.json', ...[...digests].sort().map(digest => path.posix.join('blobs', ...digest.split(':')))];
		if (output === undefined) {
			// No -o: the archive goes to stdout, the saved references to stderr (#1801).
			const partial = path.join(layout, '.stdout.tar');
			await tar.c({cwd: layout, file: partial, portable: true, noDirRecurse: true}, files);
			fs.writeSync(1, fs.readFileSync(partial));
			return;
		}

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
			const parsed = parseArgs(spec('load', 'load [--input <input>] [--force] [--debug]', {input: {names: ['-i', '--input'], value: true}, force: {names: ['-f', '--force'], value: false, since: '1.0.0'}}), rest);
			requireSystem('failed to load images');
			return load(parsed.value('input'));
		}

		case 'save': {
			const command = spec('save', 'save [--arch <arch>] [--os <os>] [--output <output>] [--platform <platform>] [--debug] <references> ...', {
				output: {names: ['-o', '--output'], value: true}, arch: {names: ['-a', '--arch'], value: true}, os: {names: ['--os'], value: true}, platform: {names: ['--platform'], value: true},
			});
			const parsed = parseArgs(command, rest);
			if (parsed.positionals.length === 0) {
				throw new CliError(`Missing expected argument '<references> ...'\nUsage: ${command.usage}\n  See '${command.path} --help' for more information.`, 64);
			}

			requireSystem('failed to save images');
			// DefaultPlatform.resolve: --platform, else --os/--arch, else CONTAINER_DEFAULT_PLATFORM, else every platform.
			const arch = parsed.value('arch');
			const platform = parsed.value('platform')
				?? (arch === undefined && parsed.value('os') === undefined ? process.env['CONTAINER_DEFAULT_PLATFORM'] : `${parsed.value('os') ?? 'linux'}/${arch ?? hostPlatformArch()}`);
			const output = parsed.value('output');
			await save(output, parsed.positionals, platform === undefined || platform === '' ? undefined : platform);
			const saved = parsed.positionals.map(reference => `${reference}\n`).join('');
			if (output === undefined) {
				process.stderr.write(saved);
				return '';
			}

			return saved;
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
				return printJson(images.map(image => imageJson(image, 'list')));
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
			const found = parsed.positionals.map(name => {
				try {
					return findImage(name);
				} catch {
					return name;
				}
			});
			const missing = found.filter((entry): entry is string => typeof entry === 'string');
			if (missing.length > 0) {
				throw new CliError(versionAtLeast('1.0.0') ? `notFound: "image not found: ${[...missing].sort().join(', ')}"` : `notFound: "image ${missing[0]!} not found"`);
			}

			// 1.x: pretty-printed (Output.renderJSON(…, options: .pretty)); 0.12: one line.
			return printJson(found.map(image => imageJson(image as ImageRecord, 'inspect')), true);
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

