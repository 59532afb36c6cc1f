/**
 * The `container run` command line of one build's VM. Pure, so the exact argv is unit-tested
 * against the grammar in test/simulators/apple-container/GRAMMAR.md.
 */
import {UserError} from '../../errors.js';
import type {Mount, VolumeMount} from '../driver.js';

/** Labels every exobuild VM carries, so a later run can find the VMs of killed runs. */
export const vmLabels = {
	session: 'dev.exobuild.session',
	ownerPid: 'dev.exobuild.owner-pid',
	ownerStart: 'dev.exobuild.owner-start',
} as const;

export const agentPath = '/usr/local/bin/exobuild-agent';

export interface VmRun {
	readonly name: string;
	readonly sessionId: string;
	readonly ownerPid: number;
	/** The owner's start time (so a reused pid is not taken for the owner); '' if unknown. */
	readonly ownerStart: string;
	readonly image: string;
	/** linux/ARCH of the VM, always passed: CONTAINER_DEFAULT_PLATFORM would otherwise choose it. */
	readonly platform: string;
	readonly mounts: readonly Mount[];
	/** Named volumes (BuildKit's kept state), attached read-write. */
	readonly volumes?: readonly VolumeMount[];
	readonly env: Readonly<Record<string, string>>;
	readonly agentArgs: readonly string[];
	readonly cpus: number;
	readonly memory: string;
	readonly virtualization: boolean;
	readonly rosetta: boolean;
	/** `--read-only-path NONE` (container >= 1.2.1): only when /proc/sys must be writable. */
	readonly writableProcSys: boolean;
	/** `-i`: the agent reads its stdin (the env= secrets, docs/agent-protocol.md). */
	readonly interactive?: boolean;
}

/** `-v HOST:VM[:ro]` cannot carry a ':' in a path: such a path is refused, not mangled. */
const volume = (mount: Mount): string => {
	for (const part of [mount.hostPath, mount.sandboxPath]) {
		if (part.includes(':') || part.includes(',')) {
			throw new UserError(`cannot share ${part} with the VM: Apple's container -v syntax has no escape for ':' or ','`, {
				hint: 'move or link the folder to a path without those characters',
				code: 'E_USAGE',
			});
		}
	}

	return `${mount.hostPath}:${mount.sandboxPath}${mount.readOnly ? ':ro' : ''}`;
};

/**
 * `-v NAME:DST` of a named volume. Parser.volume (apple/container 1.2.2,
 * Services/ContainerAPIService/Client/Parser.swift; the same from 0.4.0): a source without '/'
 * that is not "." or ".." is a volume name, checked against VolumeStorage.volumeNamePattern
 * `^[A-Za-z0-9][A-Za-z0-9_.-]*$` (at most 255); a name that does not exist is created (with a
 * logged warning), so the driver makes its volumes first (src/sandboxes/apple-container/state-volumes.ts).
 */
const namedVolume = (mount: VolumeMount): string => {
	if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(mount.volume) || mount.volume.length > 255 || mount.sandboxPath.includes(':') || !mount.sandboxPath.startsWith('/')) {
		throw new UserError(`cannot attach the volume ${mount.volume} at ${mount.sandboxPath}: not a name and path Apple's container -v takes`, {
			hint: 'this is a bug in exobuild: please report it', code: 'E_INTERNAL',
		});
	}

	return `${mount.volume}:${mount.sandboxPath}`;
};

/**
 * ManagedContainer.nameValid (apple/container 1.2.2, ContainerResource/Container/ManagedContainer.swift):
 * at most 63 characters (a DNS label), `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`.
 */
export const validContainerName = (name: string): boolean => name.length <= 63 && /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/.test(name);

/**
 * ResourceLabels.validateLabelKey (apple/container 1.2.2, ContainerResource/Common/ResourceLabels.swift):
 * lowercase dotted segments of [a-z0-9-], at most 128 characters. `run` stores other keys, but
 * then the container's ResourceLabels are empty, so exobuild keeps to this form.
 */
export const validLabelKey = (key: string): boolean => key.length <= 128 && /^[a-z\d](?:[a-z\d-]*[a-z\d])?(?:\.[a-z\d](?:[a-z\d-]*[a-z\d])?)*$/.test(key);

/**
 * One `--label K=V`. Parser.labels (apple/container 1.2.2, Services/ContainerAPIService/Client/Parser.swift)
 * splits with `maxSplits: 2`: a value holding '=' is refused ("invalid label format").
 */
export const labelArg = (key: string, value: string): string => {
	if (!validLabelKey(key) || value.includes('=') || value.includes('\n') || `${key}=${value}`.length > 4096) {
		throw new UserError(`cannot label the VM ${JSON.stringify(`${key}=${value}`)}: Apple's container takes lowercase dotted keys and values without '='`, {
			hint: 'this is a bug in exobuild: please report it', code: 'E_INTERNAL',
		});
	}

	return `${key}=${value}`;
};

export const containerRunArgs = (run: VmRun): string[] => {
	if (!validContainerName(run.name)) {
		throw new UserError(`cannot name the VM ${run.name}: Apple's container takes at most 63 characters of [a-zA-Z0-9_.-]`, {
			hint: 'this is a bug in exobuild: please report it', code: 'E_INTERNAL',
		});
	}

	return runArgs(run);
};

const runArgs = (run: VmRun): string[] => [
	'run', '--rm', ...(run.interactive === true ? ['-i'] : []), '--name', run.name,
	'--label', labelArg(vmLabels.session, run.sessionId),
	'--label', labelArg(vmLabels.ownerPid, String(run.ownerPid)),
	'--label', labelArg(vmLabels.ownerStart, run.ownerStart),
	// Always explicit: CONTAINER_DEFAULT_PLATFORM (DefaultPlatform.swift) and [container] in
	// config.toml change the defaults of platform, CPUs and memory.
	'--platform', run.platform,
	// Mounting binfmt_misc and running buildkitd need CAP_SYS_ADMIN and more; there is no
	// --privileged. Apple's own builder VM runs with ALL as well.
	'--cap-add', 'ALL',
	'--cpus', String(run.cpus),
	'--memory', run.memory,
	...(run.writableProcSys ? ['--read-only-path', 'NONE'] : []),
	...(run.rosetta ? ['--rosetta'] : []),
	...(run.virtualization ? ['--virtualization'] : []),
	...run.mounts.flatMap(mount => ['--volume', volume(mount)]),
	...(run.volumes ?? []).flatMap(mount => ['--volume', namedVolume(mount)]),
	...Object.entries(run.env).flatMap(([key, value]) => ['--env', `${key}=${value}`]),
	'--entrypoint', agentPath,
	run.image,
	...run.agentArgs,
];
