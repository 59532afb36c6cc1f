/**
 * The JSON and text Apple's `container` CLI prints, as zod schemas per version, each read from
 * the Swift Codable structs that print it (file + tag in test/simulators/apple-container/GRAMMAR.md;
 * a fixture of each shape is in test/fixtures/apple-container/). Three eras:
 * - 0.12.x: `image list` is PrintableImage `{reference, fullSize, descriptor}`, `image inspect` is
 *   ImageDetail `{name, index, variants}`, `list`/`inspect` is PrintableContainer
 *   `{status: "running", configuration, networks, startedDate}`, `image load` prints
 *   `Loaded images:` then one reference a line.
 * - 1.0.0 to 1.2.2: ImageResource `{id, configuration: {name, creationDate, descriptor}, variants}`
 *   (no top-level name, labels or index), ManagedContainer `{id, configuration, status: {state}}`,
 *   `image load` prints the references only; `system status --format json` is flat.
 * - 1.4.1: `system status --format json` is nested `{status, paths, server}`, or only `{status}`
 *   when the apiserver is not running.
 * Unknown fields pass through untouched; what exobuild reads is required.
 */
import {z} from 'zod';
import type {Version} from './container-cli.js';

const before = (version: Version, limit: Version): boolean => {
	for (let index = 0; index < 3; index++) {
		if (version[index] !== limit[index]) {
			return version[index]! < limit[index]!;
		}
	}

	return false;
};

const descriptor = z.looseObject({mediaType: z.string(), digest: z.string(), size: z.number()});

// ---------------------------------------------------------------- system status / version

/** 0.10.0 to 1.2.2 (PrintableStatus in System/SystemStatus.swift): flat; logRoot absent when nil. */
export const systemStatusFlat = z.looseObject({
	status: z.string(),
	appRoot: z.string(),
	installRoot: z.string(),
	logRoot: z.string().optional(),
	apiServerVersion: z.string(),
	apiServerCommit: z.string(),
	apiServerBuild: z.string(),
	apiServerAppName: z.string(),
});

/** 1.4.1: nested; `{status}` alone when the apiserver is not running or not registered. */
export const systemStatusNested = z.looseObject({
	status: z.string(),
	paths: z.looseObject({appRoot: z.string(), installRoot: z.string(), logRoot: z.string().optional()}).optional(),
	server: z.looseObject({version: z.string(), build: z.string(), commit: z.string(), appName: z.string()}).optional(),
}).refine(value => !('apiServerVersion' in value), {message: 'a flat (1.2.x) status, not the nested one of 1.4'});

/** What the driver takes from `system status --format json`, whatever the era. */
export interface SystemStatus {
	readonly status: string;
	readonly serverVersion: string | undefined;
}

/**
 * The shape of `system status --format json` for a CLI version: flat up to 1.2.x, nested from
 * 1.4.0; 1.3.x is not known (neither was read), so either is taken there.
 */
export const parseSystemStatus = (json: unknown, version: Version): z.ZodSafeParseResult<SystemStatus> => {
	// The apiserver's version is ReleaseVersion.singleLine: "container-apiserver version 1.2.2 (build: release, commit: af405ff)".
	const short = (text: string | undefined): string | undefined => text?.replace(/^container-apiserver version /, '') || undefined;
	const flat = systemStatusFlat.transform(value => ({status: value.status, serverVersion: short(value.apiServerVersion)}));
	const nested = systemStatusNested.transform(value => ({status: value.status, serverVersion: short(value.server?.version)}));
	const schema = before(version, [1, 3, 0]) ? flat : before(version, [1, 4, 0]) ? z.union([flat, nested]) : nested;
	return schema.safeParse(json);
};

/** `system version --format json` (0.10.0+, VersionInfo in System/SystemVersion.swift): CLI first, apiserver when it answers. */
export const versionList = z.array(z.looseObject({version: z.string(), buildType: z.string(), commit: z.string(), appName: z.string()})).min(1);

/** `container --version`: "container CLI version 1.2.0-4-g1275b70 (build: release, commit: 1275b70)". */
export const cliVersionLine = z.string().regex(/version \S+/);

/**
 * A version as the CLI prints it (ReleaseVersion from `git describe --tags --always`):
 * "1.2.2", "1.2.0-4-g1275b70" (4 commits after 1.2.0: taken as 1.2.0, the features it is sure
 * to have), "v1.2.2". A bare commit ("1275b70") or "0.0.0" (a build without RELEASE_VERSION) says
 * nothing: undefined.
 */
export const parseCliVersion = (text: string): Version | undefined => {
	const match = /(?:^|[^\w.])v?(\d+)\.(\d+)\.(\d+)(?:-\d+-g[0-9a-f]+)?(?![\w.])/.exec(` ${text.trim()}`);
	const version = match ? [Number(match[1]), Number(match[2]), Number(match[3])] as const : undefined;
	return version === undefined || version.every(part => part === 0) ? undefined : version;
};

// ---------------------------------------------------------------- containers

/** RuntimeStatus.swift (0.12.x to 1.2.2): the only states there are. */
export const containerStateSchema = z.enum(['unknown', 'stopped', 'running', 'stopping']);

/** ContainerConfiguration.swift: capAdd/capDrop live here (from 0.12.0), not in initProcess. */
const configuration = z.looseObject({
	id: z.string(),
	labels: z.record(z.string(), z.string()),
	image: z.looseObject({reference: z.string(), descriptor}),
	capAdd: z.array(z.string()).optional(),
	capDrop: z.array(z.string()).optional(),
	rosetta: z.boolean().optional(),
	resources: z.looseObject({cpus: z.number(), memoryInBytes: z.number()}).optional(),
});

/** 1.0.0+ `list --format json` / `inspect` element (ManagedContainer.swift). */
export const managedContainer = z.looseObject({
	id: z.string(),
	configuration,
	status: z.looseObject({state: containerStateSchema}),
});

/** 0.12.x element (PrintableContainer in Container/ContainerList.swift): the state is a string at the top. */
export const printableContainer = z.looseObject({
	status: containerStateSchema,
	configuration,
	networks: z.array(z.unknown()),
});

export interface ContainerEntry {
	readonly id: string;
	readonly state: z.infer<typeof containerStateSchema>;
	readonly labels: Readonly<Record<string, string>>;
	readonly capAdd: readonly string[];
}

export const parseContainerList = (json: unknown, version: Version): ContainerEntry[] => {
	if (before(version, [1, 0, 0])) {
		return z.array(printableContainer).parse(json).map(entry => ({
			id: entry.configuration.id, state: entry.status, labels: entry.configuration.labels, capAdd: entry.configuration.capAdd ?? [],
		}));
	}

	return z.array(managedContainer).parse(json).map(entry => ({
		id: entry.id, state: entry.status.state, labels: entry.configuration.labels, capAdd: entry.configuration.capAdd ?? [],
	}));
};

// ---------------------------------------------------------------- images

const platform = z.looseObject({os: z.string(), architecture: z.string(), variant: z.string().optional()});

/** 0.12.x `image list --format json` (PrintableImage in Image/ImageList.swift). */
export const printableImage = z.looseObject({reference: z.string(), fullSize: z.string(), descriptor});

/** 0.12.x `image inspect` (ImageDetail.swift). */
export const imageDetail = z.looseObject({
	name: z.string(),
	index: descriptor,
	variants: z.array(z.looseObject({platform, size: z.number(), config: z.looseObject({})})),
});

/** 1.0.0 to 1.2.2 `image list --format json` and `image inspect` (ImageResource.swift): no top-level name, labels or index. */
export const imageResource = z.looseObject({
	id: z.string(),
	configuration: z.looseObject({name: z.string(), creationDate: z.string(), descriptor}),
	variants: z.array(z.looseObject({platform, digest: z.string(), size: z.number(), config: z.looseObject({})})),
});

export interface ImageEntry {
	readonly name: string;
	readonly indexDigest: string;
	readonly platforms: readonly string[];
}

const platformId = (value: z.infer<typeof platform>): string => [value.os, value.architecture, value.variant].filter(Boolean).join('/');

/** `image inspect REF…` output, either era. */
export const parseImageInspect = (json: unknown, version: Version): ImageEntry[] => {
	if (before(version, [1, 0, 0])) {
		return z.array(imageDetail).parse(json).map(entry => ({name: entry.name, indexDigest: entry.index.digest, platforms: entry.variants.map(variant => platformId(variant.platform))}));
	}

	return z.array(imageResource).parse(json).map(entry => ({
		name: entry.configuration.name, indexDigest: entry.configuration.descriptor.digest, platforms: entry.variants.map(variant => platformId(variant.platform)),
	}));
};

/** `image list --format json` output, either era (0.12 has no platforms in its list). */
export const parseImageList = (json: unknown, version: Version): ImageEntry[] => {
	if (before(version, [1, 0, 0])) {
		return z.array(printableImage).parse(json).map(entry => ({name: entry.reference, indexDigest: entry.descriptor.digest, platforms: []}));
	}

	return parseImageInspect(json, version);
};

/**
 * The references `image load` printed (Image/ImageLoad.swift): 0.x prints a `Loaded images:`
 * header first, 1.x the references only.
 */
export const parseLoadOutput = (stdout: string, version: Version): string[] => {
	const lines = stdout.split('\n').map(line => line.trim()).filter(line => line !== '');
	if (before(version, [1, 0, 0])) {
		const header = lines.indexOf('Loaded images:');
		return header === -1 ? [] : lines.slice(header + 1);
	}

	return lines;
};

// ---------------------------------------------------------------- volumes

/** The fields of a volume exobuild reads; `source` is the volume's ext4 image on the host (VolumesService.blockPath). */
const volumeFields = {name: z.string(), source: z.string(), labels: z.record(z.string(), z.string()).optional()};

/** 0.12.x `volume list --format json` / `volume inspect` element (Volume in ContainerResource/Volume/Volume.swift, 0.12.3): flat. */
export const flatVolume = z.looseObject({...volumeFields, driver: z.string(), format: z.string()});

/** 1.0.0 to 1.2.2 element (VolumeResource.swift, 1.2.2): `{id, configuration: VolumeConfiguration}`. */
export const volumeResource = z.looseObject({id: z.string(), configuration: z.looseObject({...volumeFields, driver: z.string(), format: z.string()})});

export interface VolumeEntry {
	readonly name: string;
	readonly source: string;
	readonly labels: Readonly<Record<string, string>>;
}

/** `volume list --format json` or `volume inspect NAME…` output, either era. */
export const parseVolumeList = (json: unknown, version: Version): VolumeEntry[] => {
	if (before(version, [1, 0, 0])) {
		return z.array(flatVolume).parse(json).map(entry => ({name: entry.name, source: entry.source, labels: entry.labels ?? {}}));
	}

	return z.array(volumeResource).parse(json).map(entry => ({name: entry.configuration.name, source: entry.configuration.source, labels: entry.configuration.labels ?? {}}));
};
