/**
 * The apple-container sandbox driver (macOS): one `container run --rm` VM per build, booted from
 * the builder image, with its own kernel and so its own binfmt_misc table. The host's macOS is
 * never touched. Every call to Apple's CLI is checked: version gates, system status, JSON shapes.
 *
 * Lifetime: the VM carries labels naming its owner (pid + start time). Ctrl-C/SIGTERM abort the
 * run, which deletes the VM before exobuild exits; a run killed hard leaves a VM that
 * reapOrphans() of the next run finds by label and deletes once its owner is gone.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {UserError} from '../../errors.js';
import {ownerAlive, processStartTime} from '../../runs/owned-dir.js';
import {requirementRow, type Requirement} from '../check-rows.js';
import {readLines} from '../read-lines.js';
import type {
	AgentExit, AgentRun, CheckRow, ImageBuildRequest, LoadReport, ReapReport, DriverFeatures, DriverOptions, Sandbox, SandboxDriver, SandboxSpec,
} from '../driver.js';
import {atLeast, containerCli, firstErrorLine, formatVersion, readVersion, runCli, spawnCli, type Version} from './container-cli.js';
import {saveSinglePlatform} from './built-image.js';
import {parseContainerList, parseImageInspect, parseLoadOutput, parseSystemStatus} from './shapes.js';
import {macosMajor, readMacHost, rosettaRow, virtualizationRow} from './mac-host.js';
import {splitArchiveByPlatform} from './per-platform.js';
import {containerRunArgs, vmLabels} from './run-args.js';
import {createStateVolumes} from './state-volumes.js';

/** `--cap-add` exists from 0.12.0; without it the VM cannot mount binfmt_misc or run buildkitd. */
export const minimumVersion: Version = [0, 12, 0];
/** What `exobuild doctor` recommends (and the install hints name). */
export const recommendedVersion: Version = [1, 2, 0];
/** From 1.2.1, `--read-only-path NONE` lifts the read-only /proc/sys that 1.2.0 introduced. */
const readOnlyPathFlagVersion: Version = [1, 2, 1];

const gib = 1024 ** 3;

/**
 * CPUs and memory of the VM: Apple's defaults (4 CPUs, 1 GiB) are too small for BuildKit plus
 * QEMU; take every CPU up to 8 and half the host's memory up to 8 GiB (at least 2 GiB).
 */
export const defaultResources = (cpus = os.cpus().length, totalMemory = os.totalmem()): {cpus: number; memory: string} => ({
	cpus: Math.max(1, Math.min(cpus, 8)),
	memory: `${Math.max(2, Math.min(8, Math.floor(totalMemory / 2 / gib)))}G`,
});

const memoryPattern = /^\d+[KMGT]?$/i;

const nativeMachine = (): string => ({arm64: 'aarch64', x64: 'x86_64'} as Record<string, string>)[process.arch] ?? os.machine();

const cliFailure = (what: string, result: {stdout: string; stderr: string; exitCode: number}, version: Version | undefined, hint: string): UserError =>
	new UserError(`${what} failed (container ${version === undefined ? '' : `${formatVersion(version)} `}exit ${result.exitCode}: ${firstErrorLine(result) || 'no output'})`, {hint, code: 'E_CONTAINER_CLI'});

export const createAppleContainerDriver = (options: DriverOptions = {}): SandboxDriver => {
	if (options.memory !== undefined && !memoryPattern.test(options.memory)) {
		throw new UserError(`--memory ${options.memory} is not a size`, {hint: 'e.g. --memory 8G (K, M, G or T; Apple\'s container rounds to MiB)', code: 'E_USAGE'});
	}

	if (options.cpus !== undefined && (!Number.isInteger(options.cpus) || options.cpus < 1)) {
		throw new UserError(`--cpus ${options.cpus} is not a whole number of CPUs`, {hint: 'e.g. --cpus 4', code: 'E_USAGE'});
	}

	let version: Version | undefined;
	const resources = {...defaultResources(), ...(options.cpus === undefined ? {} : {cpus: options.cpus}), ...(options.memory === undefined ? {} : {memory: options.memory.toUpperCase()})};

	/**
	 * `image load --input PATH` hands PATH to Apple's images service, another process: a
	 * /dev/fd/N or a pipe means nothing there (issue 11). Only a regular file is passed.
	 */
	const loadableFile = async (archivePath: string): Promise<void> => {
		const stat = await fs.stat(archivePath).catch(() => undefined);
		if (stat === undefined || !stat.isFile() || /^\/(?:dev|proc)\//.test(path.resolve(archivePath))) {
			throw new UserError(`cannot load ${archivePath} into container's image store: container image load needs a regular file (its images service opens the path itself)`, {
				hint: 'write the OCI archive to a file (-o type=oci,dest=FILE) and load that', code: 'E_USAGE',
			});
		}
	};

	const cliVersion = async (): Promise<Version> => {
		version ??= await readVersion();
		return version;
	};

	/** Whether the store has REF (`image inspect`, parsed in the shape of this version). */
	const inStore = async (reference: string): Promise<boolean> => {
		const inspected = await runCli(['image', 'inspect', reference]);
		if (inspected.exitCode !== 0) {
			return false;
		}

		const entries = parseImageInspect(JSON.parse(inspected.stdout), await cliVersion());
		return entries.length > 0;
	};

	/** Loads the builder archive into Apple's image store unless its reference is there already. */
	const ensureImage = async (reference: string, archivePath: string): Promise<void> => {
		if (await inStore(reference)) {
			return;
		}

		await loadableFile(archivePath);
		const load = await runCli(['image', 'load', '--input', archivePath]);
		if (load.exitCode !== 0) {
			throw cliFailure(`loading the builder image into container's image store (container image load --input ${archivePath})`, load, version,
				'check `container system status`; the archive is verified by exobuild, so this is the store refusing it (see docs/macos.md)');
		}

		await expectInStore([reference], load.stdout, archivePath);
	};

	/**
	 * After `image load`: every wanted reference is in the store. What the load printed (1.x: the
	 * references; 0.x: a `Loaded images:` header first) goes into the message if one is missing.
	 */
	const expectInStore = async (references: readonly string[], loadOutput: string, archivePath: string): Promise<void> => {
		const printed = parseLoadOutput(loadOutput, await cliVersion());
		const missing: string[] = [];
		for (const reference of references) {
			if (!(await inStore(reference))) {
				missing.push(reference);
			}
		}

		if (missing.length > 0) {
			throw new UserError(`container image load did not register ${missing.join(', ')} (it loaded: ${printed.join(', ') || 'nothing'})`, {
				hint: `the OCI archive is kept at ${archivePath}; the store names images by com.apple.containerization.image.name, then io.containerd.image.name, then org.opencontainers.image.ref.name (see docs/macos.md)`,
				code: 'E_CONTAINER_CLI',
			});
		}
	};

	/** What the driver needs, in the order features() checks it (diagnose() reports each). */
	const requirements: readonly Requirement[] = [
		{
			check: 'os',
			async run() {
				if (process.platform !== 'darwin' && !process.env['EXOBUILD_CONTAINER_CLI']) {
					throw new UserError(`the apple-container driver runs on macOS, not ${process.platform}`, {hint: 'on Linux use --driver linux-userns (the default)', code: 'E_DRIVER'});
				}

				return process.platform === 'darwin'
					? `macOS (Darwin ${os.release()}) ${os.machine()}`
					: `${process.platform} ${os.machine()}, with the container CLI ${containerCli()} (EXOBUILD_CONTAINER_CLI)`;
			},
		},
		{
			check: 'container version',
			async run() {
				version = await readVersion();
				if (!atLeast(version, minimumVersion)) {
					throw new UserError(`container ${formatVersion(version)} is too old: exobuild needs --cap-add, which arrived in ${formatVersion(minimumVersion)}`, {
						hint: 'upgrade Apple\'s container (https://github.com/apple/container/releases; 1.2 or later recommended)',
						code: 'E_CONTAINER_VERSION',
					});
				}

				return atLeast(version, recommendedVersion)
					? formatVersion(version)
					: `${formatVersion(version)} (works from ${formatVersion(minimumVersion)}; ${formatVersion(recommendedVersion)} or later is recommended)`;
			},
		},
		{
			check: 'container system',
			async run() {
				const status = await runCli(['system', 'status', '--format', 'json']);
				const parsed = parseSystemStatus((() => {
					try {
						return JSON.parse(status.stdout);
					} catch {
						return undefined;
					}
				})(), await cliVersion());
				if (status.exitCode !== 0 || !parsed.success || parsed.data.status !== 'running') {
					const said = parsed.success ? parsed.data.status : firstErrorLine(status) || `exit ${status.exitCode}`;
					throw new UserError(`container's system service is not running (container ${version === undefined ? '' : `${formatVersion(version)} `}says: ${said})`, {
						hint: status.exitCode === 0 && !parsed.success
							? 'its `system status --format json` has a shape exobuild does not know for this version: please report it with the output'
							: 'start it with `container system start`, then try again',
						code: 'E_CONTAINER_SYSTEM',
					});
				}

				return `running${parsed.data.serverVersion === undefined ? '' : ` (API server ${parsed.data.serverVersion})`}`;
			},
		},
	];

	const deleteVm = async (name: string): Promise<boolean> => {
		const result = await runCli(['delete', '--force', name]);
		return result.exitCode === 0;
	};

	return {
		name: 'apple-container',
		defaultRecipe: 'containerfile',
		// BuildKit's root in an Apple `container volume` per state slot (./state-volumes.ts):
		// an ext4 image, where overlayfs works; a virtiofs share of a host folder would not do.
		engineState: {kind: 'volume', volumes: createStateVolumes(cliVersion)},

		async features(): Promise<DriverFeatures> {
			for (const requirement of requirements) {
				await requirement.run();
			}

			if (options.virtualization && process.platform === 'darwin' && (macosMajor(undefined) ?? 15) < 15) {
				throw new UserError('--virtualization needs macOS 15 or later (and an M3 or later chip, and a kernel with KVM)', {
					hint: 'drop --virtualization: QEMU user emulation does not need it (see `exobuild doctor`)',
					code: 'E_USAGE',
				});
			}

			return {privateBinfmt: true, nativeMachine: nativeMachine()};
		},

		async diagnose(): Promise<CheckRow[]> {
			const host = await readMacHost();
			const rows: CheckRow[] = [];
			for (const requirement of requirements) {
				const row = await requirementRow('host', requirement);
				// A later requirement needs the earlier ones (no CLI: no status); say the first failure only.
				if (row.status === 'fail') {
					rows.push(row);
					break;
				}

				if (requirement.check === 'container version' && version !== undefined && !atLeast(version, recommendedVersion)) {
					rows.push({...row, status: 'warn', fix: `upgrade Apple's container to ${formatVersion(recommendedVersion)} or later (https://github.com/apple/container/releases)`});
				} else if (requirement.check === 'os' && host.macos !== undefined) {
					rows.push({...row, detail: `macOS ${host.macos} on ${host.chip ?? os.machine()}`});
				} else {
					rows.push(row);
				}
			}

			return [...rows, virtualizationRow(host, options.virtualization === true), rosettaRow(host, options.rosetta === true)];
		},

		async start(spec: SandboxSpec): Promise<Sandbox> {
			const runVersion = await cliVersion();
			await ensureImage(spec.builderImage.reference, spec.builderImage.archivePath);
			const name = `exobuild-${spec.sessionId}`;
			const ownerStart = await processStartTime(process.pid) ?? '';
			let client: ReturnType<typeof spawnCli> | undefined;
			let stopped: Promise<void> | undefined;
			const stop = async (): Promise<void> => {
				stopped ??= (async () => {
					// The VM dies with `delete --force`; the client then exits on its own.
					await deleteVm(name);
					if (client !== undefined) {
						const exited = await Promise.race([client.then(() => true), new Promise<boolean>(resolve => {
							setTimeout(() => resolve(false), 10_000).unref();
						})]);
						if (!exited) {
							client.kill('SIGKILL');
						}
					}
				})();
				return stopped;
			};

			return {
				id: name,
				async runAgent(run: AgentRun): Promise<AgentExit> {
					const args = containerRunArgs({
						name,
						sessionId: spec.sessionId,
						ownerPid: process.pid,
						ownerStart,
						image: spec.builderImage.reference,
						platform: `linux/${spec.builderImage.architecture}`,
						mounts: spec.mounts,
						volumes: spec.volumes ?? [],
						env: spec.env ?? {},
						agentArgs: run.args,
						cpus: resources.cpus,
						memory: resources.memory,
						virtualization: options.virtualization === true,
						rosetta: options.rosetta === true,
						writableProcSys: process.env['EXOBUILD_APPLE_WRITABLE_PROC_SYS'] === '1' && atLeast(runVersion, readOnlyPathFlagVersion),
						interactive: run.stdin !== undefined,
					});
					client = spawnCli(args, run.stdin);
					const onAbort = (): void => {
						void stop();
					};

					run.signal?.addEventListener('abort', onAbort, {once: true});
					try {
						const [result] = await Promise.all([client, readLines(client.stdout, run.onStdoutLine), readLines(client.stderr, run.onStderrLine)]);
						return {exitCode: result.exitCode, signal: result.signal};
					} finally {
						run.signal?.removeEventListener('abort', onAbort);
					}
				},
				stop,
			};
		},

		async reapOrphans(): Promise<ReapReport> {
			const listed = await runCli(['list', '--all', '--format', 'json']);
			if (listed.exitCode !== 0) {
				throw cliFailure('listing containers (container list --all --format json)', listed, version, 'check `container system status`');
			}

			const entries = parseContainerList(JSON.parse(listed.stdout || '[]'), await cliVersion());
			const removed: string[] = [];
			for (const entry of entries) {
				const pid = Number(entry.labels[vmLabels.ownerPid]);
				if (entry.labels[vmLabels.session] === undefined || !Number.isInteger(pid) || pid <= 0) {
					continue;
				}

				const startTime = entry.labels[vmLabels.ownerStart] || undefined;
				if (await ownerAlive({pid, ...(startTime === undefined ? {} : {startTime}), kind: 'apple-container', created: ''})) {
					continue;
				}

				if (await deleteVm(entry.id)) {
					removed.push(`${entry.id} (${entry.state})`);
				}
			}

			return {removed};
		},

		async loadImage(archivePath: string, tags: readonly string[]): Promise<LoadReport> {
			await loadableFile(archivePath);
			const load = await runCli(['image', 'load', '--input', archivePath]);
			if (load.exitCode === 0) {
				await expectInStore(tags, load.stdout, archivePath);
				return {loaded: [...tags], notes: []};
			}

			// Whether Apple's store takes an image index is not documented: if it refuses this
			// archive and the archive holds several platforms, load one image per platform.
			const work = await fs.mkdtemp(path.join(path.dirname(archivePath), '.per-platform-'));
			try {
				const parts = await splitArchiveByPlatform(archivePath, work, tags);
				if (parts.length < 2) {
					throw cliFailure(`loading the image into container's store (container image load --input ${archivePath})`, load, version,
						`the OCI archive is kept at ${archivePath}`);
				}

				for (const part of parts) {
					const partLoad = await runCli(['image', 'load', '--input', part.archivePath]);
					if (partLoad.exitCode !== 0) {
						throw cliFailure(`loading the ${part.platform} image (container image load), after the multi-platform index was refused`, partLoad, version,
							`the OCI archive is kept at ${archivePath}`);
					}

					await expectInStore(part.tags, partLoad.stdout, archivePath);
				}

				const loaded = parts.flatMap(part => part.tags);
				return {
					loaded,
					notes: [`container ${version === undefined ? '' : `${formatVersion(version)} `}refused the multi-platform index (${firstErrorLine(load)}); loaded one image per platform instead: ${loaded.join(', ')}`],
				};
			} finally {
				await fs.rm(work, {recursive: true, force: true});
			}
		},

		async pullImage(reference: string, platform: string, dest: string): Promise<void> {
			const pull = await runCli(['image', 'pull', '--platform', platform, reference]);
			if (pull.exitCode !== 0) {
				throw cliFailure(`pulling ${reference} (container image pull)`, pull, version, 'check the reference and the network; offline, use `exobuild builder load -i FILE`');
			}

			// `image save` writes an index even for one platform (./built-image.ts): keep its one manifest.
			const work = await fs.mkdtemp(path.join(path.dirname(dest), '.image-save-'));
			try {
				const saved = path.join(work, 'saved.tar');
				const save = await runCli(['image', 'save', '--platform', platform, '--output', saved, reference]);
				if (save.exitCode !== 0) {
					throw cliFailure(`saving ${reference} (container image save)`, save, version, 'check `container image list`');
				}

				await saveSinglePlatform(saved, platform, dest, work);
			} finally {
				await fs.rm(work, {recursive: true, force: true});
			}
		},

		async buildImage(request: ImageBuildRequest): Promise<void> {
			await cliVersion();
			// `-o type=oci,dest=FILE` writes nothing at FILE (see ./built-image.ts): build into the
			// store under a name of this run, save that one platform, then delete the name.
			const reference = `exobuild-image-build:${process.pid}-${Date.now()}`;
			const args = [
				'build', '--file', request.containerfile, '--platform', request.platform, '--tag', reference,
				'--cpus', String(resources.cpus), '--memory', resources.memory,
				...Object.entries(request.buildArgs).flatMap(([key, value]) => ['--build-arg', `${key}=${value}`]),
				'--progress', 'plain', request.contextDir,
			];
			const child = spawnCli(args);
			const tail: string[] = [];
			const onLine = (line: string): void => {
				tail.push(line);
				tail.splice(0, Math.max(0, tail.length - 5));
				request.onLine?.(line);
			};

			const abort = (): void => {
				child.kill('SIGTERM');
			};

			request.signal?.addEventListener('abort', abort, {once: true});
			const work = await fs.mkdtemp(path.join(path.dirname(request.dest), '.image-save-'));
			try {
				const [result] = await Promise.all([child, readLines(child.stdout, onLine), readLines(child.stderr, onLine)]);
				if (result.exitCode !== 0) {
					throw new UserError(`${containerCli()} build -f ${request.containerfile} failed (exit ${result.exitCode ?? result.signal}): ${tail.at(-1) ?? 'no output'}`, {
						hint: 'it needs the network (base images come from Docker Hub); offline, load a builder instead: `exobuild builder load -i FILE`',
						exitCode: 1,
						code: 'E_BUILDER_IMAGE',
					});
				}

				const saved = path.join(work, 'saved.tar');
				const save = await runCli(['image', 'save', '--platform', request.platform, '--output', saved, reference], request.signal === undefined ? {} : {signal: request.signal});
				if (save.exitCode !== 0) {
					throw cliFailure(`saving the built image (container image save --platform ${request.platform} --output ${saved} ${reference})`, save, version, 'check `container image list`');
				}

				await saveSinglePlatform(saved, request.platform, request.dest, work);
			} finally {
				request.signal?.removeEventListener('abort', abort);
				await runCli(['image', 'delete', reference]).catch(() => undefined);
				await fs.rm(work, {recursive: true, force: true});
			}
		},
	};
};

