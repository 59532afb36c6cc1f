/**
 * BuildKit's kept state on macOS: one Apple `container volume` per state slot, named
 * `exobuild-state-KEY-buildkit-N` (KEY: a hash of exobuild's cache folder, whose locks guard the
 * slots; volumes are machine-wide, so two cache folders must not share one) and attached read-write at the engine-state path of each VM. A
 * volume is an ext4 block image (VolumesService.createVolumeImage, apple/container 1.2.2,
 * Sources/Services/ContainerAPIService/Server/Volumes/VolumesService.swift), which BuildKit's
 * overlayfs snapshotter can use; a virtiofs share of a host folder cannot be. docker/buildx's
 * docker-container driver keeps BuildKit's state the same way, in a volume that outlives the
 * container (driver/docker-container/driver.go, docker/buildx v0.30).
 *
 * src/pipeline/engine-state.ts holds the slots (lock with an owner record, seal, which slot a
 * build takes); this module only makes, lists and removes the volume behind a slot number.
 * Grammar: test/simulators/apple-container/GRAMMAR.md, "Volumes".
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {cacheDir} from '../../paths.js';
import {UserError} from '../../errors.js';
import type {StateVolumes} from '../driver.js';
import {atLeast, firstErrorLine, formatVersion, runCli, type CliResult, type Version} from './container-cli.js';
import {labelArg} from './run-args.js';
import {parseVolumeList, type VolumeEntry} from './shapes.js';

/**
 * `volume create --opt journal=MODE` (VolumesService.parseJournalConfig) arrived in 0.12.0
 * (apple/container#1412). Without a journal (the default: "with no `journal` option, no journal
 * gets created") an ext4 image whose VM was stopped hard may not mount cleanly again; with
 * `ordered` it replays. Volumes themselves exist from 0.4.0 (Sources/CLI/Volume/VolumeCreate.swift).
 */
export const stateVolumeVersion: Version = [0, 12, 0];

/** Labels every state volume carries: whose it is, and its slot. */
export const stateVolumeLabels = {owner: 'dev.exobuild.state', slot: 'dev.exobuild.state-slot'} as const;
const ownerValue = 'buildkit';

/** The cache folder's share of the volume names: the slots' locks live in that folder only. */
export const cacheKeyOf = (folder: string): string => crypto.createHash('sha256').update(path.resolve(folder)).digest('hex').slice(0, 12);

export const stateVolumeName = (slot: number, key: string): string => `exobuild-state-${key}-buildkit-${slot}`;
const slotPattern = (key: string): RegExp => new RegExp(`^exobuild-state-${key}-buildkit-(\\d+)$`);

/** Why a CLI of `version` cannot keep the state in volumes, or undefined when it can. */
export const stateVolumesUnavailable = (version: Version): string | undefined => (atLeast(version, stateVolumeVersion)
	? undefined
	: `container ${formatVersion(version)} cannot make journaled volumes (volume create --opt journal arrived in ${formatVersion(stateVolumeVersion)}); upgrade it to keep BuildKit's state`);

/** `volume create` of slot N's volume. */
export const stateVolumeCreateArgs = (slot: number, key: string): string[] => [
	'volume', 'create',
	'--label', labelArg(stateVolumeLabels.owner, ownerValue),
	'--label', labelArg(stateVolumeLabels.slot, String(slot)),
	'--opt', 'journal=ordered',
	stateVolumeName(slot, key),
];

/** Whether a listed volume is one exobuild made for a slot (its name and both labels agree). */
const slotOf = (volume: VolumeEntry, key: string): number | undefined => {
	const match = slotPattern(key).exec(volume.name);
	if (match === null || volume.labels[stateVolumeLabels.owner] !== ownerValue || volume.labels[stateVolumeLabels.slot] !== match[1]) {
		return undefined;
	}

	return Number(match[1]);
};

/** The bytes the volume's image takes on the host (a sparse file: its allocated blocks); 0 when that is not a file. */
const allocatedBytes = async (source: string): Promise<number> => {
	const stat = await fs.lstat(source).catch(() => undefined);
	return stat?.isFile() === true ? stat.blocks * 512 : 0;
};

const failure = (what: string, result: CliResult, version: Version, hint: string): UserError =>
	new UserError(`${what} failed (container ${formatVersion(version)} exit ${result.exitCode}: ${firstErrorLine(result) || 'no output'})`, {hint, code: 'E_CONTAINER_CLI'});

export const createStateVolumes = (cliVersion: () => Promise<Version>, key: string = cacheKeyOf(cacheDir())): StateVolumes => {
	const list = async (): Promise<VolumeEntry[]> => {
		const listed = await runCli(['volume', 'list', '--format', 'json']);
		if (listed.exitCode !== 0) {
			throw failure('listing volumes (container volume list --format json)', listed, await cliVersion(), 'check `container system status`');
		}

		return parseVolumeList(JSON.parse(listed.stdout || '[]'), await cliVersion());
	};

	const find = async (slot: number): Promise<VolumeEntry | undefined> => (await list()).find(volume => volume.name === stateVolumeName(slot, key));

	return {
		async unavailable() {
			return stateVolumesUnavailable(await cliVersion());
		},

		async ensure(slot) {
			const name = stateVolumeName(slot, key);
			const existing = await find(slot);
			if (existing !== undefined) {
				if (slotOf(existing, key) !== slot) {
					throw new UserError(`a volume named ${name} exists that exobuild did not make (it lacks the labels ${stateVolumeLabels.owner}=${ownerValue} and ${stateVolumeLabels.slot}=${slot})`, {
						hint: `exobuild keeps BuildKit's state in it: rename or remove that volume (container volume delete ${name})`,
						code: 'E_CONTAINER_CLI',
					});
				}

				return {name, created: false};
			}

			const created = await runCli(stateVolumeCreateArgs(slot, key));
			if (created.exitCode !== 0) {
				throw failure(`creating BuildKit's state volume (container ${stateVolumeCreateArgs(slot, key).join(' ')})`, created, await cliVersion(),
					'check `container system status` and the free space of the disk holding container\'s app root');
			}

			return {name, created: true};
		},

		async remove(slot) {
			const name = stateVolumeName(slot, key);
			const existing = await find(slot);
			// A volume of that name that exobuild did not make is left alone (ensure refuses to use it).
			if (existing === undefined || slotOf(existing, key) !== slot) {
				return;
			}

			const removed = await runCli(['volume', 'delete', name]);
			if (removed.exitCode !== 0 && await find(slot) !== undefined) {
				throw failure(`removing BuildKit's state volume (container volume delete ${name})`, removed, await cliVersion(),
					'a VM may still have it attached: `container list --all`, then `container delete --force ID` of exobuild\'s VM');
			}
		},

		async list() {
			const slots: Array<{slot: number; name: string; bytes: number}> = [];
			for (const volume of await list()) {
				const slot = slotOf(volume, key);
				if (slot !== undefined) {
					slots.push({slot, name: volume.name, bytes: await allocatedBytes(volume.source)});
				}
			}

			return slots;
		},
	};
};
