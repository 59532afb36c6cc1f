/**
 * `container run`: the real grammar, a container record, the image's rootfs unpacked once per
 * manifest digest, and a detached "VM" process (main.js __vm ID, its own session) that runs the
 * container through exobuild's linux-userns sandbox. The VM outlives this client: a foreground
 * run only streams the VM's output files, forwards SIGINT/SIGTERM to the container's init
 * process, and exits with its exit code; a SIGKILLed client leaves the container running.
 */
import {execFileSync, spawn} from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {setTimeout as sleep} from 'node:timers/promises';
import {blobPath} from '../../../src/oci/index.js';
import {applyLayer} from '../../../src/oci/unpack.js';
import {hostPlatform} from '../../../src/platforms/parse.js';
import {keyValues, parseArgs, parseSize, usageError, type CommandSpec, type OptionSpec} from './args.js';
import {allCapabilities, boundingSetSpec, effectiveCapabilities} from './capabilities.js';
import {findImage, platformOf, type PlatformManifest} from './images.js';
import {anonymousLabel, createVolume, readVolumes, validVolumeName} from './volumes.js';
import {
	alive, CliError, containerFiles, paths, readContainer, requireSystem, versionAtLeast, writeJsonAtomically,
	type ContainerRecord, type MountRecord,
} from './state.js';

const value = (...names: string[]): OptionSpec => ({names, value: true});
const flag = (...names: string[]): OptionSpec => ({names, value: false});

/**
 * `run` and `create` options (Flags.Process, Flags.Resource, Flags.Management, Flags.Registry,
 * Flags.Progress in Services/ContainerAPIService/Client/Flags.swift; `since` = the first tag whose
 * Flags.swift has the flag: 0.7.0 to 1.2.2 read).
 */
export const runOptions = {
	env: value('-e', '--env'), envFile: value('--env-file'), gid: value('--gid'), interactive: flag('-i', '--interactive'), tty: flag('-t', '--tty'),
	user: value('-u', '--user'), uid: value('--uid'), workdir: value('-w', '--workdir', '--cwd'), ulimit: {...value('--ulimit'), since: '0.9.0'},
	cpus: value('-c', '--cpus'), memory: value('-m', '--memory'), shmSize: {...value('--shm-size'), since: '1.0.0'},
	arch: value('-a', '--arch'), capAdd: {...value('--cap-add'), since: '0.12.0'}, capDrop: {...value('--cap-drop'), since: '0.12.0'},
	cidfile: value('--cidfile'), detach: flag('-d', '--detach'), dns: value('--dns'), dnsDomain: value('--dns-domain'), dnsOption: value('--dns-option'),
	dnsSearch: value('--dns-search'), noDns: flag('--no-dns'), entrypoint: value('--entrypoint'), init: {...flag('--init'), since: '0.10.0'}, initImage: {...value('--init-image'), since: '0.10.0'},
	kernel: value('-k', '--kernel'), kernelArg: {...value('--kernel-arg'), since: '1.2.0'}, label: value('-l', '--label'), mount: value('--mount'), name: value('--name'), network: value('--network'),
	os: value('--os'), publish: value('-p', '--publish'), platform: value('--platform'), publishSocket: value('--publish-socket'),
	readOnly: {...flag('--read-only'), since: '0.8.0'}, readOnlyPath: {...value('--read-only-path'), since: '1.2.1'}, maskedPath: {...value('--masked-path'), since: '1.2.1'},
	remove: flag('--rm', '--remove'), rosetta: {...flag('--rosetta'), since: '0.7.0'}, driver: {...value('--runtime'), since: '0.10.0'}, ssh: flag('--ssh'), tmpfs: value('--tmpfs'),
	volume: value('-v', '--volume'), virtualization: flag('--virtualization'), scheme: value('--scheme'), progress: value('--progress'),
} satisfies Record<string, OptionSpec>;

export const runSpec: CommandSpec & {options: typeof runOptions} = {
	path: 'container run', usage: 'container run [<options>] <image> [<arguments> ...]', options: runOptions, passthroughAfterFirst: true,
};

const thisDir = path.dirname(fileURLToPath(import.meta.url));
const mainJs = path.join(thisDir, 'main.js');

const hostArch = (): string => hostPlatform()?.architecture ?? process.arch;

/**
 * Parser.volume (Services/ContainerAPIService/Client/Parser.swift 1.2.2): leading ':' trimmed,
 * split at ':'; one part is an anonymous volume; a source holding '/' (or "." / "..") is a
 * host path that must exist, any other source a volume name checked against the pattern.
 */
const parseVolume = (spec: string): MountRecord => {
	const parts = spec.replace(/^:+/, '').split(':').filter(part => part !== '');
	if (parts.length === 1) {
		return {type: 'volume', source: crypto.randomUUID().toLowerCase(), destination: parts[0]!, readonly: false, anonymous: true};
	}

	if (parts.length > 3) {
		throw new CliError(`invalidArgument: "invalid volume format ${spec}"`);
	}

	const [source, destination, mode] = parts as [string, string, string | undefined];
	const isPath = source.includes('/') || source === '.' || source === '..';
	if (!isPath && !validVolumeName(source)) {
		throw new CliError(`invalidArgument: "invalid volume name '${source}': must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$"`);
	}

	const readonly = (mode ?? '').split(',').includes('ro');
	return isPath ? {type: 'bind', source: path.resolve(source), destination, readonly} : {type: 'volume', source, destination, readonly};
};

const parseMount = (spec: string): MountRecord => {
	const fields = keyValues(spec.split(','));
	const type = fields['type'] ?? 'bind';
	const source = fields['source'] ?? fields['src'] ?? '';
	const destination = fields['target'] ?? fields['destination'] ?? fields['dst'];
	if (destination === undefined || !['bind', 'volume', 'tmpfs', 'virtiofs'].includes(type)) {
		throw new CliError(`invalidArgument: "invalid mount ${spec}"`);
	}

	return {type: type === 'virtiofs' ? 'bind' : type as MountRecord['type'], source: type === 'bind' ? path.resolve(source) : source, destination, readonly: 'readonly' in fields || 'ro' in fields};
};

/** The host folder behind a mount (named and anonymous volumes are folders of the simulator's state). */
const hostPathOf = (mount: MountRecord): string => {
	if (mount.type === 'bind') {
		if (!fs.existsSync(mount.source)) {
			throw new CliError(`invalidArgument: "path '${mount.source}' does not exist"`);
		}

		return mount.source;
	}

	// Utility.getOrCreateVolume (1.2.2): a missing volume is created (an anonymous one labelled so), with a logged warning for a named one.
	if (!readVolumes().some(volume => volume.name === mount.source)) {
		createVolume(mount.source, mount.anonymous === true ? {[anonymousLabel]: ''} : {}, {});
	}

	const dir = paths.volumeData(mount.source);
	fs.mkdirSync(dir, {recursive: true});
	return dir;
};

/** The mount points a driver creates in a rootfs that lacks them (an image need not have /proc). */
const mountPoints = ['proc', 'sys', 'dev', 'run', 'tmp', 'etc'];

/** The image's root filesystem, unpacked once per manifest digest (renamed into place when complete). */
const rootfsOf = async (image: PlatformManifest): Promise<string> => {
	const final = path.join(paths.rootfs(), image.descriptor.digest.replace('sha256:', ''));
	if (fs.existsSync(final)) {
		return final;
	}

	fs.mkdirSync(paths.rootfs(), {recursive: true});
	const partial = `${final}.partial-${process.pid}`;
	fs.rmSync(partial, {recursive: true, force: true});
	fs.mkdirSync(partial);
	try {
		for (const layer of image.manifest.layers) {
			await applyLayer(blobPath(paths.content(), layer.digest), partial);
		}

		for (const dir of mountPoints) {
			fs.mkdirSync(path.join(partial, dir), {recursive: true});
		}

		fs.renameSync(partial, final);
	} catch (error) {
		fs.rmSync(partial, {recursive: true, force: true});
		if (!fs.existsSync(final)) {
			throw error;
		}
	}

	return final;
};

const wantedPlatform = (parsed: ReturnType<typeof parseArgs<keyof typeof runOptions>>): string => {
	const platform = parsed.value('platform') ?? process.env['CONTAINER_DEFAULT_PLATFORM'];
	if (platform !== undefined) {
		return platform.split('/').length === 1 ? `linux/${platform}` : platform;
	}

	return `${parsed.value('os') ?? 'linux'}/${parsed.value('arch') ?? hostArch()}`;
};

/**
 * Parser.labels (Services/ContainerAPIService/Client/Parser.swift, 0.12.3 and 1.2.2): an empty
 * label is refused; `split(separator: "=", maxSplits: 2)` makes "k=v=w" three parts, refused.
 * Keys are not checked at run (ResourceLabels checks them later and yields no labels then).
 */
const parseLabels = (raw: readonly string[]): Record<string, string> => {
	const labels: Record<string, string> = {};
	for (const label of raw) {
		if (label === '') {
			throw new CliError('invalidArgument: "label cannot be an empty string"');
		}

		const parts = label.split('=').filter(part => part !== '');
		if (parts.length > 2) {
			throw new CliError(`invalidArgument: "invalid label format ${label}"`);
		}

		labels[parts[0] ?? ''] = parts[1] ?? '';
	}

	return labels;
};

/**
 * The architecture the simulated Rosetta runs: amd64 on an arm64 host, as on a Mac. On an amd64
 * host (where Rosetta cannot be played the Mac's way round) it is arm64: the same registration,
 * mirrored, so that what it does to the agent is tested on this machine too (see GRAMMAR.md).
 */
export const rosettaTarget = (): string => (hostArch() === 'arm64' ? 'amd64' : 'arm64');

/** Checks the arguments and writes the container's record (state "created"). */
export const createContainer = async (argv: readonly string[]): Promise<{record: ContainerRecord; detach: boolean; interactive: boolean}> => {
	const parsed = parseArgs(runSpec, argv);
	const [imageName, ...args] = parsed.positionals;
	if (imageName === undefined) {
		throw usageError(runSpec, 'Missing expected argument \'<image>\'');
	}

	requireSystem('failed to create container');
	if (parsed.flag('virtualization')) {
		throw new CliError('unsupported: "nested virtualization is not supported on the platform"');
	}

	const name = parsed.value('name');
	if (name !== undefined) {
		// 1.2.0+: ManagedContainer.nameValid (at most 63, a DNS label); before: Utility.validEntityName (the pattern only).
		const pattern = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
		if (versionAtLeast('1.2.0') && (name.length > 63 || !pattern.test(name))) {
			throw new CliError(`invalidArgument: "container ID ${name} is not a valid container ID"`);
		}

		if (!pattern.test(name)) {
			throw new CliError(`invalidArgument: "invalid entity name ${name}"`);
		}
	}

	const labels = parseLabels(parsed.values('label'));
	const id = name ?? crypto.randomUUID().toLowerCase();
	if (readContainer(id) !== undefined) {
		throw new CliError(`exists: "container with id ${id} already exists"`);
	}

	const image = findImage(imageName);
	const platformImage = platformOf(image, wantedPlatform(parsed));
	const imageConfig = platformImage.config.config ?? {};
	const entrypoint = parsed.value('entrypoint');
	const command = entrypoint === undefined
		? [...(imageConfig.Entrypoint ?? []), ...(args.length > 0 ? args : imageConfig.Cmd ?? [])]
		: [entrypoint, ...args];
	if (command.length === 0) {
		throw new CliError('invalidArgument: "Command/Entrypoint not specified for container process"');
	}

	const envFiles = parsed.values('envFile').flatMap(file => fs.readFileSync(file, 'utf8').split('\n').map(line => line.trim()).filter(line => line !== '' && !line.startsWith('#')));
	const env = [...(imageConfig.Env ?? []), ...envFiles, ...parsed.values('env').map(entry => (entry.includes('=') ? entry : `${entry}=${process.env[entry] ?? ''}`))];
	const capAdd = parsed.values('capAdd');
	const capDrop = parsed.values('capDrop');
	const caps = versionAtLeast('0.12.0') ? effectiveCapabilities(capAdd, capDrop) : [...allCapabilities];
	const readOnlyPaths = parsed.values('readOnlyPath');
	const mounts = [...parsed.values('volume').map(parseVolume), ...parsed.values('mount').map(parseMount), ...parsed.values('tmpfs').map((target): MountRecord => ({type: 'tmpfs', source: 'tmpfs', destination: target, readonly: false}))];
	for (const mount of mounts) {
		if (mount.type !== 'tmpfs') {
			hostPathOf(mount);
		}
	}

	const cpus = parsed.value('cpus');
	const memory = parsed.value('memory');
	const record: ContainerRecord = {
		id,
		image: {reference: image.reference, descriptor: image.descriptor},
		manifestDigest: platformImage.descriptor.digest,
		platform: platformImage.platform,
		rootfs: await rootfsOf(platformImage),
		command,
		env,
		workdir: parsed.value('workdir') ?? (imageConfig.WorkingDir || '/'),
		...(parsed.value('user') === undefined ? {} : {user: parsed.value('user')}),
		labels,
		mounts,
		capAdd,
		capDrop,
		...(boundingSetSpec(caps) === undefined ? {} : {boundingSet: boundingSetSpec(caps)}),
		readOnlyProcSys: versionAtLeast('1.2.0') && !readOnlyPaths.includes('NONE'),
		readOnlyPaths,
		maskedPaths: parsed.values('maskedPath'),
		cpus: cpus === undefined ? 4 : Number.parseInt(cpus, 10),
		memoryInBytes: memory === undefined ? 1024 ** 3 : parseSize(memory, 'M'),
		// Utility.swift 1.2.2: `config.rosetta = management.rosetta || (host arm64 && requested amd64)`.
		rosetta: parsed.flag('rosetta') || platformImage.platform.architecture === rosettaTarget(),
		readOnly: parsed.flag('readOnly'),
		useInit: parsed.flag('init'),
		remove: parsed.flag('remove'),
		networks: parsed.values('network'),
		createdDate: new Date().toISOString(),
		state: 'created',
	};
	if (Number.isNaN(record.cpus)) {
		throw new CliError(`The value '${cpus}' is invalid for '-c <cpus>'`, 64);
	}

	const files = containerFiles(id);
	fs.mkdirSync(files.dir, {recursive: true});
	for (const file of [files.stdout, files.stderr, files.log]) {
		fs.writeFileSync(file, '');
	}

	writeJsonAtomically(files.record, record);
	const cidfile = parsed.value('cidfile');
	if (cidfile) {
		fs.writeFileSync(cidfile, id);
	}

	return {record, detach: parsed.flag('detach'), interactive: parsed.flag('interactive')};
};

const startVm = (id: string): ReturnType<typeof spawn> => {
	const vm = spawn(process.execPath, [mainJs, '__vm', id], {detached: true, stdio: 'ignore', env: process.env});
	vm.on('error', () => undefined);
	return vm;
};

/** Copies what was appended to `file` since `offset` to `out`; returns the new offset. */
const pump = (file: string, offset: number, out: number): number => {
	let fd: number;
	try {
		fd = fs.openSync(file, 'r');
	} catch {
		return offset;
	}

	try {
		const buffer = Buffer.alloc(65_536);
		let position = offset;
		for (;;) {
			const read = fs.readSync(fd, buffer, 0, buffer.length, position);
			if (read === 0) {
				return position;
			}

			fs.writeSync(out, buffer.subarray(0, read));
			position += read;
		}
	} finally {
		fs.closeSync(fd);
	}
};

/** `container run`; resolves to the exit code. */
export const run = async (argv: readonly string[]): Promise<number> => {
	const {record, detach, interactive} = await createContainer(argv);
	const files = containerFiles(record.id);
	if (interactive && !detach) {
		// -i: this client's stdin reaches the container through a FIFO (never a file on disk).
		execFileSync('mkfifo', ['-m', '0600', files.stdin]);
	}

	if (detach) {
		startVm(record.id).unref();
		for (let attempt = 0; attempt < 3000; attempt++) {
			const now = readContainer(record.id);
			if (now === undefined || now.state !== 'created') {
				break;
			}

			await sleep(10);
		}

		process.stdout.write(`${record.id}\n`);
		return 0;
	}

	fs.writeFileSync(files.attached, `${process.pid}\n`);
	const vm = startVm(record.id);
	if (interactive) {
		const fifo = fs.createWriteStream(files.stdin);
		fifo.on('error', () => undefined);
		process.stdin.pipe(fifo);
	}

	const pending: NodeJS.Signals[] = [];
	const forward = (signal: NodeJS.Signals): void => {
		const mainPid = readContainer(record.id)?.mainPid;
		if (mainPid === undefined) {
			pending.push(signal);
			return;
		}

		try {
			process.kill(mainPid, signal);
		} catch {}
	};

	process.on('SIGINT', forward);
	process.on('SIGTERM', forward);
	let out = 0;
	let err = 0;
	for (;;) {
		const now = readContainer(record.id);
		out = pump(files.stdout, out, 1);
		err = pump(files.stderr, err, 2);
		if (now?.mainPid !== undefined && pending.length > 0) {
			for (const signal of pending.splice(0)) {
				forward(signal);
			}
		}

		if (now === undefined || (now.state === 'stopped' && (now.exitCode !== undefined || !alive(now.vmPid)))) {
			out = pump(files.stdout, out, 1);
			err = pump(files.stderr, err, 2);
			if (fs.existsSync(files.dir)) {
				fs.writeFileSync(files.ack, '');
			}

			vm.unref();
			return now?.exitCode ?? 1;
		}

		await sleep(20);
	}
};
