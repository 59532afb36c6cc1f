/**
 * The linux-userns sandbox driver: a user namespace (as a normal user: sandbox root is the user,
 * ids 1..65536 its subordinate ids; as root: the identity map; see id-map.ts) with its own mount,
 * pid, ipc and uts namespaces, pivoted into an overlay of the builder image's rootfs, with its
 * own binfmt_misc instance (Linux >= 6.7). The host's kernel table is never touched.
 */
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs/promises';
import {UserError} from '../../errors.js';
import {packageRoot, runsDir} from '../../paths.js';
import {createOwnedDir, reapOwnedDirs} from '../../runs/owned-dir.js';
import {requirementRows, type Requirement} from '../check-rows.js';
import type {AgentExit, AgentRun, CheckRow, ReapReport, DriverFeatures, DriverOptions, ImageBuildRequest, Sandbox, SandboxDriver, SandboxSpec} from '../driver.js';
import {builderRootfs, reapRootfsUnpacks} from './builder-rootfs.js';
import {buildImageInSandbox} from './image-build.js';
import {identityMapSize, idMapTool, requiredSubordinateIds, subgidFile, subordinateRanges, subuidFile, type IdRange} from './id-map.js';
import {runInNamespaces} from './namespaces.js';

export {builderRootfs} from './builder-rootfs.js';

const enterScript = path.join(packageRoot, 'src', 'sandboxes', 'linux-userns', 'enter-sandbox.sh');
const agentPath = '/usr/local/bin/exobuild-agent';
const runSuffix = '.sandbox';

/** The path of `command` on $PATH, if it is there. */
const onPath = async (command: string): Promise<string | undefined> => {
	for (const dir of (process.env['PATH'] ?? '/usr/bin:/bin').split(':').filter(Boolean)) {
		if (await fs.access(path.join(dir, command), fs.constants.X_OK).then(() => true, () => false)) {
			return path.join(dir, command);
		}
	}

	return undefined;
};

/** The first kernel whose binfmt_misc can be mounted per user namespace. */
const minimumKernel = [6, 7] as const;

export const kernelSupportsPrivateBinfmt = (release: string): boolean => {
	const [major = 0, minor = 0] = release.split(/[.-]/).map(Number);
	return major > minimumKernel[0] || (major === minimumKernel[0] && minor >= minimumKernel[1]);
};

export interface LinuxUsernsOptions {
	/** For tests: run this instead of the agent (argv inside the sandbox; AgentRun.args are appended). */
	readonly entrypoint?: readonly string[];
}

/** What the apple-container driver's VM options mean here: nothing, so they are refused, naming why. */
const refuseVmOptions = (driverOptions: DriverOptions): void => {
	const given = Object.entries({cpus: '--cpus', memory: '--memory', virtualization: '--virtualization', rosetta: '--rosetta'})
		.filter(([key]) => driverOptions[key as keyof DriverOptions] !== undefined)
		.map(([, flag]) => flag);
	if (given.length > 0) {
		throw new UserError(`${given.join(', ')} ${given.length === 1 ? 'applies' : 'apply'} to the apple-container driver's VM; a linux-userns sandbox has no VM`, {
			hint: 'drop the flag: linux-userns sandboxes use the host\'s CPUs and memory, and QEMU user emulation needs no virtualization',
			code: 'E_USAGE',
		});
	}
};

export const createLinuxUsernsDriver = (driverOptions: DriverOptions = {}, options: LinuxUsernsOptions = {}): SandboxDriver => {
	refuseVmOptions(driverOptions);
	return linuxUsernsDriver(options);
};

const readNumber = async (file: string): Promise<number | undefined> => {
	const text = await fs.readFile(file, 'utf8').catch(() => undefined);
	return text === undefined || text.trim() === '' ? undefined : Number(text.trim());
};

/** What the linux-userns driver needs of the host, in the order features() checks it. */
export const hostRequirements: readonly Requirement[] = [
	{
		check: 'os',
		async run() {
			if (process.platform !== 'linux') {
				throw new UserError(`the linux-userns driver runs on Linux, not ${process.platform}`, {hint: 'on macOS use --driver apple-container', code: 'E_DRIVER'});
			}

			return `Linux ${os.machine()}`;
		},
	},
	{
		check: 'kernel',
		async run() {
			const release = os.release();
			if (!kernelSupportsPrivateBinfmt(release)) {
				throw new UserError(`kernel ${release} cannot give a sandbox its own binfmt_misc (needs Linux 6.7 or later)`, {
					hint: 'upgrade the kernel; exobuild never registers emulators in the host\'s global table',
					code: 'E_KERNEL',
				});
			}

			return `${release} (6.7 or later: each sandbox mounts its own binfmt_misc)`;
		},
	},
	{
		check: 'newuidmap/newgidmap',
		async run() {
			if (process.getuid?.() === 0) {
				const tools = await Promise.all([idMapTool('newuidmap'), idMapTool('newgidmap')]).then(found => found.join(', '), () => 'not installed');
				return `${tools} (not needed as root)`;
			}

			return [await idMapTool('newuidmap'), await idMapTool('newgidmap')].join(', ');
		},
	},
	{
		check: 'subordinate ids',
		async run() {
			if (process.getuid?.() === 0) {
				return `running as root: the sandbox maps ids 0-${identityMapSize - 1} to the host's own (root is not needed: a normal user with ${subuidFile} and ${subgidFile} ranges can build)`;
			}

			const user = os.userInfo();
			const describe = (ranges: readonly IdRange[]): string => ranges.map(range => `${range.start}-${range.start + range.count - 1}`).join(', ');
			const uids = await subordinateRanges(subuidFile);
			const gids = await subordinateRanges(subgidFile);
			return `sandbox root is ${user.username} (uid ${user.uid}); ids 1-${requiredSubordinateIds} are ${subuidFile} ${describe(uids)} and ${subgidFile} ${describe(gids)}`;
		},
	},
	...['unshare', 'setpriv'].map((tool): Requirement => ({
		check: tool,
		async run() {
			const found = await onPath(tool);
			if (found === undefined) {
				throw new UserError(`${tool} is not installed`, {hint: 'install util-linux (apt-get install util-linux)', code: 'E_DEPENDENCY'});
			}

			return found;
		},
	})),
	{
		check: 'user namespaces',
		async run() {
			const max = await readNumber('/proc/sys/user/max_user_namespaces');
			if (max === 0) {
				throw new UserError('user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)', {
					hint: 'enable them: sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d to keep it)',
					code: 'E_USERNS',
				});
			}

			const asRoot = process.getuid?.() === 0;
			const unprivileged = await readNumber('/proc/sys/kernel/unprivileged_userns_clone');
			if (!asRoot && unprivileged === 0) {
				throw new UserError('user namespaces are disabled for normal users (/proc/sys/kernel/unprivileged_userns_clone is 0)', {
					hint: 'enable them: sysctl -w kernel.unprivileged_userns_clone=1 (and in /etc/sysctl.d to keep it), or run exobuild as root',
					code: 'E_USERNS',
					exitCode: 2,
				});
			}

			const apparmor = await readNumber('/proc/sys/kernel/apparmor_restrict_unprivileged_userns');
			if (!asRoot && apparmor === 1) {
				throw new UserError('AppArmor keeps normal users from using user namespaces (/proc/sys/kernel/apparmor_restrict_unprivileged_userns is 1)', {
					hint: 'allow them: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (and in /etc/sysctl.d to keep it), or run exobuild as root',
					code: 'E_USERNS',
					exitCode: 2,
				});
			}

			return [
				`max_user_namespaces ${max ?? 'not readable'}`,
				...(unprivileged === undefined ? [] : [`unprivileged_userns_clone ${unprivileged}${unprivileged === 0 ? ' (only matters without root)' : ''}`]),
				...(apparmor === undefined ? [] : [`apparmor_restrict_unprivileged_userns ${apparmor}${apparmor === 1 ? ' (only matters without root)' : ''}`]),
			].join('; ');
		},
	},
];

/**
 * The host's own binfmt_misc, for information only: exobuild never reads from it, registers in it
 * or changes it (each sandbox mounts its own instance).
 */
export const hostBinfmtRow = async (dir = '/proc/sys/fs/binfmt_misc'): Promise<CheckRow> => {
	const row = (detail: string): CheckRow => ({area: 'host', check: 'host binfmt_misc', status: 'ok', detail: `${detail}; exobuild never uses or changes it`});
	const mountinfo = await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
	if (!mountinfo.split('\n').some(line => line.split(' ')[4] === dir)) {
		return row('not mounted');
	}

	const status = (await fs.readFile(path.join(dir, 'status'), 'utf8').catch(() => 'unreadable')).trim();
	const entries = (await fs.readdir(dir).catch(() => [] as string[])).filter(name => name !== 'register' && name !== 'status').sort();
	return row(`mounted, ${status}, ${entries.length === 0 ? 'no handlers' : `${entries.length} handler${entries.length === 1 ? '' : 's'} (${entries.join(', ')})`}`);
};

const linuxUsernsDriver = (options: LinuxUsernsOptions): SandboxDriver => ({
	name: 'linux-userns',
	// The containerfile recipe needs a builder with BuildKit to be built with: distro comes first.
	defaultRecipe: 'distro',
	buildImageOverrides: true,
	// BuildKit's root lives in a state slot's folder of exobuild's cache, mounted read-write
	// (src/pipeline/engine-state.ts): the sandbox's root is this user, so the host reads it.
	engineState: {kind: 'host-folder'},

	async buildImage(request: ImageBuildRequest): Promise<void> {
		// A driver of the same options runs the sandbox (the drivers hold no state).
		await buildImageInSandbox(linuxUsernsDriver(options), request);
	},

	async features(): Promise<DriverFeatures> {
		for (const requirement of hostRequirements) {
			await requirement.run();
		}

		return {privateBinfmt: true, nativeMachine: os.machine()};
	},

	async diagnose(): Promise<CheckRow[]> {
		const rows = await requirementRows('host', hostRequirements);
		// Off Linux the other rows would only repeat that.
		return rows[0]?.status === 'fail' ? rows.slice(0, 1) : [...rows, await hostBinfmtRow()];
	},

	async start(spec: SandboxSpec): Promise<Sandbox> {
		if ((spec.volumes ?? []).length > 0) {
			throw new UserError('the linux-userns driver has no volumes of its own: its kept state is a host folder', {
				hint: 'this is a bug in exobuild: please report it', code: 'E_INTERNAL',
			});
		}

		const rootfs = await builderRootfs(spec.builderImage, spec.signal);
		const run = await createOwnedDir(path.join(runsDir(), `${spec.sessionId}${runSuffix}`), 'linux-userns');
		const abort = new AbortController();
		let running: Promise<unknown> | undefined;
		const stop = async (): Promise<void> => {
			abort.abort();
			await running?.catch(() => undefined);
			await run.remove();
		};

		return {
			id: spec.sessionId,
			async runAgent(agentRun: AgentRun): Promise<AgentExit> {
				const mounts = spec.mounts.flatMap(mount => ['--mount', mount.readOnly ? 'ro' : 'rw', mount.hostPath, mount.sandboxPath]);
				const env = Object.entries(spec.env ?? {}).flatMap(([key, value]) => ['--env', `${key}=${value}`]);
				const command = [...(options.entrypoint ?? [agentPath]), ...agentRun.args];
				const signal = agentRun.signal === undefined ? abort.signal : AbortSignal.any([abort.signal, agentRun.signal]);
				const exit = runInNamespaces(['/bin/sh', enterScript, rootfs, run.path, ...mounts, ...env, '--', ...command], {
					onStdoutLine: agentRun.onStdoutLine,
					onStderrLine: agentRun.onStderrLine,
					signal,
					...(agentRun.stdin === undefined ? {} : {stdin: agentRun.stdin}),
				});
				running = exit;
				return exit;
			},
			stop,
		};
	},

	async reapOrphans(): Promise<ReapReport> {
		const removed = await reapOwnedDirs(runsDir(), name => name.endsWith(runSuffix));
		await reapRootfsUnpacks();
		return {removed};
	},
});
