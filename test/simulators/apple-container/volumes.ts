/**
 * `container volume create|list|inspect|delete` (alias `v`; list `ls`, delete `rm`) with the
 * real grammar and output shapes per version (GRAMMAR.md, "Volumes"; apple/container
 * Sources/ContainerCommands/Volume/*.swift at 0.12.3 and 1.2.2). A volume's data is a folder
 * under the simulator's state (volume-data/NAME), standing for the ext4 image: it persists
 * across simulated runs until the volume is deleted.
 */
import fs from 'node:fs';
import {keyValues, parseArgs, parseSize, table, type CommandSpec, type OptionSpec} from './args.js';
import {
	CliError, listContainers, paths, readJson, requireSystem, cliJson, sortedJson, versionAtLeast, volumeRecords, writeJsonAtomically, type VolumeRecord,
} from './state.js';

const flag = (...names: string[]): OptionSpec => ({names, value: false});
const value = (...names: string[]): OptionSpec => ({names, value: true});
const spec = <K extends string>(name: string, usage: string, options: Record<K, OptionSpec>): CommandSpec & {options: Record<K, OptionSpec>} =>
	({path: `container ${name}`, usage: `container ${usage}`, options});

/** VolumeStorage.volumeNamePattern (ContainerResource/Volume/VolumeConfiguration.swift 1.2.2; Volume.swift 0.12.3). */
export const validVolumeName = (name: string): boolean => name.length <= 255 && /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name);
/** VolumeStorage.defaultVolumeSizeBytes: 512 GiB, sparse. */
const defaultVolumeSize = 512 * 1024 ** 3;
/** VolumeConfiguration.anonymousLabel. */
export const anonymousLabel = 'com.apple.container.resource.anonymous';

export const readVolumes = (): VolumeRecord[] => readJson(paths.volumes(), volumeRecords) ?? [];

const invalidName = (name: string): CliError => new CliError(`invalidArgument: "invalid volume name '${name}': must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$"`);

/**
 * VolumesService.parseJournalConfig (1.2.2; from 0.12.0): `mode` or `mode:size`, mode one of
 * writeback, ordered, journal. Before 0.12.0 driver options were not read: any value passes.
 */
const checkJournal = (journal: string | undefined): void => {
	if (journal === undefined || !versionAtLeast('0.12.0')) {
		return;
	}

	const mode = journal.split(':')[0]!;
	if (!['writeback', 'ordered', 'journal'].includes(mode)) {
		throw new CliError(`internalError: "storage error: invalid journal mode '${mode}': must be writeback, ordered, or journal"`);
	}
};

/** Makes a volume (VolumesService._create): the record and its data folder. */
export const createVolume = (name: string, labels: Record<string, string>, options: Record<string, string>): VolumeRecord => {
	if (!validVolumeName(name)) {
		throw invalidName(name);
	}

	const volumes = readVolumes();
	if (volumes.some(volume => volume.name === name)) {
		throw new CliError(`exists: "volume '${name}' already exists"`);
	}

	checkJournal(options['journal']);
	const size = options['size'] === undefined ? defaultVolumeSize : parseSize(options['size']);
	if (size < 1024 * 1024) {
		throw new CliError('internalError: "storage error: volume size too small: minimum 1MiB"');
	}

	const record: VolumeRecord = {name, labels, options, sizeInBytes: size, createdAt: new Date().toISOString()};
	fs.mkdirSync(paths.volumeData(name), {recursive: true});
	writeJsonAtomically(paths.volumes(), [...volumes, record]);
	return record;
};

/** Swift's default Date encoding (0.x list): seconds since 2001-01-01. */
const swiftSeconds = (iso: string): number => (Date.parse(iso) - Date.UTC(2001, 0, 1)) / 1000;

/**
 * One volume as the CLI prints it. 0.12.x: `Volume` flat (`createdAt`; list uses the default
 * encoder: seconds since 2001, keys unsorted; inspect: ISO-8601, sorted, pretty). 1.x:
 * `VolumeResource` `{id, configuration: {…, creationDate}}` (sorted by cliJson).
 */
const printable = (volume: VolumeRecord, isoDates: boolean): Record<string, unknown> => {
	const fields = {
		name: volume.name, driver: 'local', format: 'ext4', source: paths.volumeData(volume.name),
		labels: volume.labels, options: volume.options, ...(volume.sizeInBytes === undefined ? {} : {sizeInBytes: volume.sizeInBytes}),
	};
	if (versionAtLeast('1.0.0')) {
		return {id: volume.name, configuration: {...fields, creationDate: volume.createdAt}};
	}

	return {...fields, createdAt: isoDates ? volume.createdAt : swiftSeconds(volume.createdAt)};
};

/** The names of volumes some container (in any state) has attached: VolumesService._delete refuses those. */
const volumesInUse = (): Set<string> => new Set(listContainers().flatMap(record => record.mounts.filter(mount => mount.type === 'volume').map(mount => mount.source)));

export const volumeCommand = async (argv: readonly string[]): Promise<string> => {
	if (!versionAtLeast('0.4.0')) {
		throw new CliError('Unexpected argument \'volume\'\nUsage: container <subcommand>\n  See \'container --help\' for more information.', 64);
	}

	const [sub, ...rest] = argv;
	switch (sub) {
		case 'create': {
			const parsed = parseArgs(spec('volume create', 'volume create [--label <label> ...] [--opt <opt> ...] [-s <s>] [--debug] <name>', {
				label: value('--label'), opt: value('--opt'), size: value('-s'),
			}), rest);
			const [name] = parsed.positionals;
			if (name === undefined) {
				throw new CliError('Missing expected argument \'<name>\'\nUsage: container volume create [--label <label> ...] [--opt <opt> ...] [-s <s>] [--debug] <name>', 64);
			}

			requireSystem('failed to create volume');
			const size = parsed.value('size');
			// VolumeCreate.swift: Utility.parseKeyValuePairs (split at the first '='); -s goes into the options as "size".
			createVolume(name, keyValues(parsed.values('label')), {...keyValues(parsed.values('opt')), ...(size === undefined ? {} : {size})});
			return `${name}\n`;
		}

		case 'list':
		case 'ls': {
			const parsed = parseArgs(spec('volume list', 'volume list [--format <format>] [--quiet] [--debug]', {format: value('--format'), quiet: flag('-q', '--quiet')}), rest);
			const format = parsed.value('format') ?? 'table';
			if (format !== 'json' && format !== 'table') {
				throw new CliError(`The value '${format}' is invalid for '--format <format>'`, 64);
			}

			requireSystem('failed to list volumes');
			const volumes = readVolumes();
			if (format === 'json') {
				return `${cliJson(volumes.map(volume => printable(volume, versionAtLeast('1.0.0'))))}\n`;
			}

			if (parsed.flag('quiet')) {
				return volumes.map(volume => `${volume.name}\n`).join('');
			}

			const options = (volume: VolumeRecord): string => Object.keys(volume.options).sort().map(key => `${key}=${volume.options[key]}`).join(',');
			return `${table([['NAME', 'TYPE', 'DRIVER', 'OPTIONS'], ...volumes.map(volume => [volume.name, anonymousLabel in volume.labels ? 'anonymous' : 'named', 'local', options(volume)])])}\n`;
		}

		case 'inspect': {
			const parsed = parseArgs(spec('volume inspect', 'volume inspect [--debug] <names> ...', {}), rest);
			if (parsed.positionals.length === 0) {
				throw new CliError('Missing expected argument \'<names> ...\'\nUsage: container volume inspect [--debug] <names> ...', 64);
			}

			requireSystem('failed to inspect volume');
			const volumes = readVolumes();
			const wanted = [...new Set(parsed.positionals)];
			const found = volumes.filter(volume => wanted.includes(volume.name));
			const missing = wanted.filter(name => !found.some(volume => volume.name === name)).sort();
			if (missing.length > 0) {
				// 1.x: one error naming every missing volume (VolumeInspect.swift); 0.12.x: ClientVolume.inspect of the first one fails.
				throw new CliError(versionAtLeast('1.0.0') ? `notFound: "volume not found: ${missing.join(', ')}"` : `notFound: "volume '${missing[0]}' not found"`);
			}

			const printed = found.map(volume => printable(volume, true));
			// Both eras print it pretty, keys sorted, dates ISO-8601 (VolumeInspect.swift 0.12.3: JSONOptions; 1.x: .pretty).
			return `${sortedJson(printed, true).replaceAll('/', '\\/')}\n`;
		}

		case 'delete':
		case 'rm': {
			const parsed = parseArgs(spec('volume delete', 'volume delete [--all] [--debug] [<names> ...]', {all: flag('-a', '--all')}), rest);
			const all = parsed.flag('all');
			if (versionAtLeast('1.0.0') && parsed.positionals.length === 0 && !all) {
				throw new CliError('invalidArgument: "no volumes specified and --all not supplied"');
			}

			if (versionAtLeast('1.0.0') && parsed.positionals.length > 0 && all) {
				throw new CliError('invalidArgument: "explicitly supplied volume name(s) conflict with the --all flag"');
			}

			requireSystem('failed to delete volumes');
			const volumes = readVolumes();
			const wanted = all ? volumes.map(volume => volume.name) : [...new Set(parsed.positionals)];
			const missing = wanted.filter(name => !volumes.some(volume => volume.name === name));
			if (missing.length > 0) {
				// Swift's description of a Set<String>.
				throw new CliError(`notFound: "failed to delete one or more volumes: [${missing.map(name => JSON.stringify(name)).join(', ')}]"`);
			}

			const inUse = volumesInUse();
			const failed = wanted.filter(name => inUse.has(name));
			const deleted = wanted.filter(name => !inUse.has(name));
			for (const name of deleted) {
				fs.rmSync(paths.volumeData(name), {recursive: true, force: true});
			}

			writeJsonAtomically(paths.volumes(), volumes.filter(volume => !deleted.includes(volume.name)));
			const printed = deleted.map(name => `${name}\n`).join('');
			if (failed.length > 0) {
				// VolumesService._delete throws volumeInUse; VolumeDelete logs it and fails after the others.
				throw new CliError(`internalError: "delete failed for one or more volumes: [${failed.map(name => JSON.stringify(name)).join(', ')}]"`, 1, printed);
			}

			return printed;
		}

		default:
			throw new CliError(`simulator: unknown or unsimulated subcommand 'container volume ${sub ?? ''}'`, 64);
	}
};
