/**
 * The `container run` command line of one build's VM. Pure, so the exact argv is unit-tested
 * against the grammar in test/simulators/apple-container/GRAMMAR.md.
 */
import {UserError} from '../../errors.js';
import type {Mount} from '../runtime.js';

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
	readonly mounts: readonly Mount[];
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

export const containerRunArgs = (run: VmRun): string[] => [
	'run', '--rm', ...(run.interactive === true ? ['-i'] : []), '--name', run.name,
	'--label', `${vmLabels.session}=${run.sessionId}`,
	'--label', `${vmLabels.ownerPid}=${run.ownerPid}`,
	'--label', `${vmLabels.ownerStart}=${run.ownerStart}`,
	// Mounting binfmt_misc and running buildkitd need CAP_SYS_ADMIN and more; there is no
	// --privileged. Apple's own builder VM runs with ALL as well.
	'--cap-add', 'ALL',
	'--cpus', String(run.cpus),
	'--memory', run.memory,
	...(run.writableProcSys ? ['--read-only-path', 'NONE'] : []),
	...(run.rosetta ? ['--rosetta'] : []),
	...(run.virtualization ? ['--virtualization'] : []),
	...run.mounts.flatMap(mount => ['--volume', volume(mount)]),
	...Object.entries(run.env).flatMap(([key, value]) => ['--env', `${key}=${value}`]),
	'--entrypoint', agentPath,
	run.image,
	...run.agentArgs,
];
