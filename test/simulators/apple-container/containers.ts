/** `container list|inspect|stop|kill|delete|logs`: records read back, signals sent to the container's init process. */
import fs from 'node:fs';
import {setTimeout as sleep} from 'node:timers/promises';
import {parseArgs, table, type CommandSpec, type OptionSpec} from './args.js';
import {
	alive, CliError, containerFiles, findContainer, listContainers, readContainer, requireSystem, cliJson, versionAtLeast,
	type ContainerRecord,
} from './state.js';

const flag = (...names: string[]): OptionSpec => ({names, value: false});
const value = (...names: string[]): OptionSpec => ({names, value: true});

const configurationJson = (record: ContainerRecord): unknown => {
	const [executable, ...args] = record.command;
	return {
		id: record.id,
		image: record.image,
		mounts: record.mounts.map(mount => ({type: mount.type === 'bind' ? {virtiofs: {}} : mount.type === 'tmpfs' ? {tmpfs: {}} : {volume: {name: mount.source}}, source: mount.source, destination: mount.destination, options: mount.readonly ? ['ro'] : []})),
		publishedPorts: [],
		publishedSockets: [],
		labels: record.labels,
		sysctls: {},
		networks: (record.networks.length > 0 ? record.networks : ['default']).map(network => ({network: network.split(',')[0], options: {hostname: record.id}})),
		dns: {nameservers: ['1.1.1.1'], searchDomains: [], options: []},
		rosetta: record.rosetta,
		initProcess: {
			executable, arguments: args, environment: record.env, workingDirectory: record.workdir, terminal: false,
			user: record.user === undefined ? {id: {uid: 0, gid: 0}} : {raw: {userString: record.user}}, supplementalGroups: [], rlimits: [],
		},
		// ContainerConfiguration.swift (0.12.0+): capAdd/capDrop are the container's, not initProcess's.
		...(versionAtLeast('0.12.0') ? {capAdd: record.capAdd, capDrop: record.capDrop} : {}),
		useInit: record.useInit,
		platform: record.platform,
		resources: {cpus: record.cpus, memoryInBytes: record.memoryInBytes},
		runtimeHandler: 'container-runtime-linux',
		virtualization: false,
		ssh: false,
		readOnly: record.readOnly,
		...(versionAtLeast('1.2.1') ? {readonlyPaths: record.readOnlyPaths, maskedPaths: record.maskedPaths} : {}),
	};
};

/**
 * One element of `list --format json` / `inspect`: 1.x ManagedContainer `{id, configuration,
 * status: {state, networks, startedDate}}`, 0.x PrintableContainer `{status, configuration,
 * networks, startedDate}`. States are RuntimeStatus's: unknown, stopped, running, stopping.
 */
export const containerJson = (record: ContainerRecord): unknown => {
	const state = record.state === 'created' ? 'stopped' : record.state;
	const startedDate = record.state === 'running' ? record.startedDate : undefined;
	if (versionAtLeast('1.0.0')) {
		return {id: record.id, configuration: configurationJson(record), status: {state, networks: [], ...(startedDate ? {startedDate} : {})}};
	}

	return {status: state, configuration: configurationJson(record), networks: [], ...(startedDate ? {startedDate} : {})};
};

const spec = <K extends string>(name: string, usage: string, options: Record<K, OptionSpec>): CommandSpec & {options: Record<K, OptionSpec>} =>
	({path: `container ${name}`, usage: `container ${usage}`, options});

const waitFor = async (check: () => boolean, milliseconds: number): Promise<boolean> => {
	const end = Date.now() + milliseconds;
	while (Date.now() < end) {
		if (check()) {
			return true;
		}

		await sleep(20);
	}

	return check();
};

const signalOf = (name: string): NodeJS.Signals | number => {
	if (/^\d+$/.test(name)) {
		return Number(name);
	}

	const upper = name.toUpperCase();
	return (upper.startsWith('SIG') ? upper : `SIG${upper}`) as NodeJS.Signals;
};

const send = (record: ContainerRecord, signal: NodeJS.Signals | number): void => {
	const target = record.mainPid ?? record.vmPid;
	if (target === undefined) {
		return;
	}

	try {
		process.kill(target, signal);
	} catch {}
};

const isRunning = (id: string): boolean => {
	const now = readContainer(id);
	return now !== undefined && (now.state === 'running' || now.state === 'stopping');
};

/** Kills the container and waits for its VM (and with it every process of the sandbox) to be gone. */
const killHard = async (record: ContainerRecord): Promise<void> => {
	send(record, 'SIGKILL');
	if (!(await waitFor(() => !alive(record.vmPid), 10_000)) && record.vmPid !== undefined) {
		try {
			process.kill(record.vmPid, 'SIGKILL');
		} catch {}

		await waitFor(() => !alive(record.vmPid), 5000);
	}
};

const idsOrAll = (all: boolean, ids: readonly string[], onlyRunning: boolean): ContainerRecord[] =>
	all ? listContainers().filter(record => !onlyRunning || record.state === 'running') : ids.map(id => findContainer(id));

export const containerCommand = async (name: string, argv: readonly string[]): Promise<string> => {
	switch (name) {
		case 'list':
		case 'ls': {
			const parsed = parseArgs(spec('list', 'list [--all] [--format <format>] [--quiet] [--debug]', {
				all: flag('-a', '--all'), format: value('--format'), quiet: flag('-q', '--quiet'),
			}), argv);
			const format = parsed.value('format') ?? 'table';
			if (format !== 'json' && format !== 'table') {
				throw new CliError(`The value '${format}' is invalid for '--format <format>'`, 64);
			}

			requireSystem('failed to list containers');
			const all = listContainers();
			const shown = all.filter(record => parsed.flag('all') || record.state === 'running');
			if (format === 'json') {
				// 0.x printed every container as JSON whatever --all said (ContainerList.swift).
				const entries = (versionAtLeast('1.0.0') ? shown : all).map(containerJson);
				return `${cliJson(entries)}\n`;
			}

			if (parsed.flag('quiet')) {
				return shown.map(record => `${record.id}\n`).join('');
			}

			const header = versionAtLeast('1.0.0') ? ['ID', 'IMAGE', 'OS', 'ARCH', 'STATE', 'IP', 'CPUS', 'MEMORY', 'STARTED'] : ['ID', 'IMAGE', 'OS', 'ARCH', 'STATE', 'ADDR', 'CPUS', 'MEMORY', 'CREATED'];
			const rows = shown.map(record => [
				record.id, record.image.reference, record.platform.os, record.platform.architecture, record.state === 'created' ? 'stopped' : record.state, '',
				String(record.cpus), `${Math.floor(record.memoryInBytes / (1024 * 1024))} MB`, (versionAtLeast('1.0.0') ? record.startedDate : record.createdDate) ?? '',
			]);
			return `${table([header, ...rows])}\n`;
		}

		case 'inspect': {
			const parsed = parseArgs(spec('inspect', 'inspect [--debug] <container-ids> ...', {}), argv);
			if (parsed.positionals.length === 0) {
				throw new CliError('Missing expected argument \'<container-ids> ...\'', 64);
			}

			requireSystem('failed to inspect containers');
			const entries = parsed.positionals.map(id => containerJson(findContainer(id)));
			return `${cliJson(entries, true)}\n`;
		}

		case 'stop': {
			const parsed = parseArgs(spec('stop', 'stop [--all] [--signal <signal>] [--time <time>] [--debug] [<container-ids> ...]', {
				all: flag('-a', '--all'), signal: value('-s', '--signal'), time: value('-t', '--time'),
			}), argv);
			requireSystem('failed to stop containers');
			const signal = signalOf(parsed.value('signal') ?? 'SIGTERM');
			const seconds = Number(parsed.value('time') ?? '5');
			const records = idsOrAll(parsed.flag('all'), parsed.positionals, true);
			await Promise.all(records.map(async record => {
				if (!isRunning(record.id)) {
					return;
				}

				send(record, signal);
				if (!(await waitFor(() => !isRunning(record.id), seconds * 1000))) {
					await killHard(readContainer(record.id) ?? record);
				}

				await waitFor(() => !alive(record.vmPid), 10_000);
			}));
			return records.map(record => `${record.id}\n`).join('');
		}

		case 'kill': {
			const parsed = parseArgs(spec('kill', 'kill [--all] [--signal <signal>] [--debug] [<container-ids> ...]', {
				all: flag('-a', '--all'), signal: value('-s', '--signal'),
			}), argv);
			requireSystem('failed to kill containers');
			const signal = signalOf(parsed.value('signal') ?? 'KILL');
			const records = idsOrAll(parsed.flag('all'), parsed.positionals, true);
			for (const record of records) {
				if (!isRunning(record.id)) {
					throw new CliError(`invalidState: "container ${record.id} is not running"`);
				}

				send(record, signal);
			}

			return records.map(record => `${record.id}\n`).join('');
		}

		case 'delete':
		case 'rm': {
			const parsed = parseArgs(spec('delete', 'delete [--all] [--force] [--debug] [<container-ids> ...]', {
				all: flag('-a', '--all'), force: flag('-f', '--force'),
			}), argv);
			requireSystem('failed to delete containers');
			const records = idsOrAll(parsed.flag('all'), parsed.positionals, false);
			for (const record of records) {
				if (isRunning(record.id)) {
					if (!parsed.flag('force')) {
						throw new CliError(`invalidState: "container ${record.id} is running and can not be deleted"`);
					}

					await killHard(readContainer(record.id) ?? record);
				}

				fs.rmSync(containerFiles(record.id).dir, {recursive: true, force: true});
			}

			return records.map(record => `${record.id}\n`).join('');
		}

		case 'logs': {
			const parsed = parseArgs(spec('logs', 'logs [--boot] [--follow] [-n <n>] [--debug] <container-id>', {
				boot: flag('--boot'), follow: flag('-f', '--follow'), lines: value('-n'),
			}), argv);
			const [id] = parsed.positionals;
			if (id === undefined) {
				throw new CliError('Missing expected argument \'<container-id>\'', 64);
			}

			requireSystem('failed to fetch logs');
			const record = findContainer(id);
			if (parsed.flag('boot')) {
				return '';
			}

			const file = containerFiles(record.id).log;
			const text = (): string => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '');
			let shown = text();
			const lines = parsed.value('lines');
			if (lines !== undefined) {
				shown = `${shown.split('\n').slice(0, -1).slice(-Number(lines)).join('\n')}\n`;
			}

			process.stdout.write(shown);
			if (parsed.flag('follow')) {
				let offset = text().length;
				while (isRunning(record.id)) {
					await sleep(50);
					const now = text();
					process.stdout.write(now.slice(offset));
					offset = now.length;
				}

				process.stdout.write(text().slice(offset));
			}

			return '';
		}

		default:
			throw new CliError(`simulator: unknown or unsimulated command 'container ${name}'`, 64);
	}
};
