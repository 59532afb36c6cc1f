/**
 * The simulator's state under $CONTAINER_SIM_ROOT: the "apiserver started" marker, the image
 * store (an OCI content store plus image records), container records and their logs, volumes.
 * Every record is a zod-checked JSON file written through a rename, so a reader never sees half
 * a record.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {z} from 'zod';

/** An error printed as the real CLI prints it (`Error: …` on stderr) with its exit code. */
export class CliError extends Error {
	constructor(message: string, readonly exitCode = 1, readonly stdout?: string) {
		super(message);
	}
}

export const simRoot = (): string => {
	const root = process.env['CONTAINER_SIM_ROOT'];
	if (!root) {
		throw new CliError('simulator: CONTAINER_SIM_ROOT is not set (the folder holding the simulated system\'s state)', 125);
	}

	return path.resolve(root);
};

export const simVersion = (): string => process.env['CONTAINER_SIM_VERSION'] ?? '1.2.2';

const parseVersion = (version: string): number[] => version.split(/[.+-]/).slice(0, 3).map(part => Number.parseInt(part, 10) || 0);

/** Whether the simulated version is `minimum` or later. */
export const versionAtLeast = (minimum: string, version: string = simVersion()): boolean => {
	const have = parseVersion(version);
	const want = parseVersion(minimum);
	for (let i = 0; i < 3; i++) {
		const a = have[i] ?? 0;
		const b = want[i] ?? 0;
		if (a !== b) {
			return a > b;
		}
	}

	return true;
};

/**
 * What the CLI's JSONEncoder prints for the simulated version: 1.x's Output.renderJSON sorts the
 * keys at every level (.sortedKeys; `pretty` adds .prettyPrinted: two-space indent, " : "), 0.x
 * keeps them in order; both escape "/" as "\/" (no .withoutEscapingSlashes).
 */
export const cliJson = (value: unknown, pretty = false): string =>
	(versionAtLeast('1.0.0') ? sortedJson(value, pretty) : JSON.stringify(value)).replaceAll('/', '\\/');

/** JSONEncoder with .sortedKeys (every level); `pretty` adds .prettyPrinted. */
export const sortedJson = (value: unknown, pretty = false): string => {
	const sort = (item: unknown): unknown => {
		if (Array.isArray(item)) {
			return item.map(sort);
		}

		if (item !== null && typeof item === 'object') {
			return Object.fromEntries(Object.keys(item).sort().map(key => [key, sort((item as Record<string, unknown>)[key])]));
		}

		return item;
	};

	const text = JSON.stringify(sort(value), null, pretty ? 2 : undefined);
	return pretty ? text.replaceAll(/^(\s*"(?:[^"\\]|\\.)*"):/gm, '$1 :') : text;
};

export const paths = {
	systemMarker: () => path.join(simRoot(), 'system.json'),
	calls: () => path.join(simRoot(), 'calls.jsonl'),
	content: () => path.join(simRoot(), 'content'),
	images: () => path.join(simRoot(), 'images.json'),
	volumes: () => path.join(simRoot(), 'volumes.json'),
	volumeData: (name: string) => path.join(simRoot(), 'volume-data', name),
	rootfs: () => path.join(simRoot(), 'rootfs'),
	containers: () => path.join(simRoot(), 'containers'),
	container: (id: string) => path.join(simRoot(), 'containers', id),
	tmp: () => path.join(simRoot(), 'tmp'),
};

export const writeJsonAtomically = (file: string, value: unknown): void => {
	fs.mkdirSync(path.dirname(file), {recursive: true});
	const partial = `${file}.${crypto.randomBytes(4).toString('hex')}.partial`;
	fs.writeFileSync(partial, `${JSON.stringify(value, null, '\t')}\n`);
	fs.renameSync(partial, file);
};

export const readJson = <T>(file: string, schema: z.ZodType<T>): T | undefined => {
	let text: string;
	try {
		text = fs.readFileSync(file, 'utf8');
	} catch {
		return undefined;
	}

	return schema.parse(JSON.parse(text));
};

export const systemStarted = (): boolean => fs.existsSync(paths.systemMarker());

export const requireSystem = (what: string): void => {
	if (!systemStarted()) {
		throw new CliError(`internalError: "${what}" (cause: "interrupted: \\"XPC connection error: Connection invalid\\"")\nEnsure container system service has been started with \`container system start\`.`);
	}
};

export const descriptorRecord = z.object({
	mediaType: z.string(),
	digest: z.string(),
	size: z.number(),
	annotations: z.record(z.string(), z.string()).optional(),
	platform: z.object({os: z.string(), architecture: z.string(), variant: z.string().optional()}).passthrough().optional(),
});
export type DescriptorRecord = z.infer<typeof descriptorRecord>;

export const imageRecord = z.object({reference: z.string(), descriptor: descriptorRecord, loadedAt: z.string()});
export type ImageRecord = z.infer<typeof imageRecord>;
export const imageRecords = z.array(imageRecord);

export const volumeRecord = z.object({
	name: z.string(),
	sizeInBytes: z.number().optional(),
	labels: z.record(z.string(), z.string()),
	options: z.record(z.string(), z.string()),
	createdAt: z.string(),
});
export type VolumeRecord = z.infer<typeof volumeRecord>;
export const volumeRecords = z.array(volumeRecord);

export const mountRecord = z.object({
	type: z.enum(['bind', 'volume', 'tmpfs']),
	source: z.string(),
	destination: z.string(),
	readonly: z.boolean(),
	/** A volume made for this container (`-v /path`): labelled anonymous. */
	anonymous: z.boolean().optional(),
});
export type MountRecord = z.infer<typeof mountRecord>;

export const containerState = z.enum(['created', 'running', 'stopping', 'stopped']);
export type ContainerState = z.infer<typeof containerState>;

export const containerRecord = z.object({
	id: z.string(),
	image: z.object({reference: z.string(), descriptor: descriptorRecord}),
	manifestDigest: z.string(),
	platform: z.object({os: z.string(), architecture: z.string(), variant: z.string().optional()}),
	rootfs: z.string(),
	/** The full argv of the init process (entrypoint + arguments). */
	command: z.array(z.string()).min(1),
	env: z.array(z.string()),
	workdir: z.string(),
	user: z.string().optional(),
	labels: z.record(z.string(), z.string()),
	mounts: z.array(mountRecord),
	capAdd: z.array(z.string()),
	capDrop: z.array(z.string()),
	/** setpriv --bounding-set value, or undefined for every capability. */
	boundingSet: z.string().optional(),
	readOnlyProcSys: z.boolean(),
	readOnlyPaths: z.array(z.string()),
	maskedPaths: z.array(z.string()),
	cpus: z.number(),
	memoryInBytes: z.number(),
	rosetta: z.boolean(),
	readOnly: z.boolean(),
	useInit: z.boolean(),
	remove: z.boolean(),
	networks: z.array(z.string()),
	createdDate: z.string(),
	state: containerState,
	startedDate: z.string().optional(),
	exitCode: z.number().optional(),
	vmPid: z.number().optional(),
	/** Host pid of the container's init process (what signals go to). */
	mainPid: z.number().optional(),
});
export type ContainerRecord = z.infer<typeof containerRecord>;

export const containerFiles = (id: string) => {
	const dir = paths.container(id);
	return {
		dir,
		record: path.join(dir, 'record.json'),
		stdout: path.join(dir, 'stdout'),
		stderr: path.join(dir, 'stderr'),
		log: path.join(dir, 'log'),
		run: path.join(dir, 'run'),
		attached: path.join(dir, 'attached'),
		ack: path.join(dir, 'client-done'),
		/** A FIFO the foreground client of `run -i` writes its stdin into; the VM gives it to the container. */
		stdin: path.join(dir, 'stdin'),
	};
};

/** Whether a process is alive (a zombie counts as gone). */
export const alive = (pid: number | undefined): boolean => {
	if (pid === undefined) {
		return false;
	}

	try {
		const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
		return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
	} catch {
		return false;
	}
};

export const readContainer = (id: string): ContainerRecord | undefined => {
	const record = readJson(containerFiles(id).record, containerRecord);
	if (record === undefined) {
		return undefined;
	}

	// A VM that died without recording its end (killed hard): the container is stopped.
	if ((record.state === 'running' || record.state === 'stopping') && !alive(record.vmPid)) {
		return {...record, state: 'stopped'};
	}

	return record;
};

export const listContainers = (): ContainerRecord[] => {
	let ids: string[];
	try {
		ids = fs.readdirSync(paths.containers());
	} catch {
		return [];
	}

	return ids.sort().map(id => readContainer(id)).filter((record): record is ContainerRecord => record !== undefined);
};

export const findContainer = (id: string): ContainerRecord => {
	const record = readContainer(id);
	if (record === undefined) {
		throw new CliError(`notFound: "container ${id} not found"`);
	}

	return record;
};
