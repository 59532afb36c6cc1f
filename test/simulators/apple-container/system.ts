/** `container system …`, `container volume …` (records only) and `container build` (parsed, recorded, refused). */
import fs from 'node:fs';
import {keyValues, parseArgs, parseSize, table, type CommandSpec, type OptionSpec} from './args.js';
import {
	alive, CliError, listContainers, paths, readJson, requireSystem, simRoot, simVersion, systemStarted, volumeRecords, writeJsonAtomically,
} from './state.js';

const flag = (...names: string[]): OptionSpec => ({names, value: false});
const value = (...names: string[]): OptionSpec => ({names, value: true});
const spec = <K extends string>(name: string, usage: string, options: Record<K, OptionSpec>): CommandSpec & {options: Record<K, OptionSpec>} =>
	({path: `container ${name}`, usage: `container ${usage}`, options});

const commit = 'simulated';

const formatOf = (format: string | undefined): 'json' | 'table' => {
	if (format === undefined || format === 'table' || format === 'json') {
		return format ?? 'table';
	}

	throw new CliError(`The value '${format}' is invalid for '--format <format>'`, 64);
};

export const cliVersionLine = (): string => `container CLI version ${simVersion()} (build: release, commit: ${commit})\n`;

export const systemCommand = async (argv: readonly string[]): Promise<string> => {
	const [sub, ...rest] = argv;
	switch (sub) {
		case 'start': {
			parseArgs(spec('system start', 'system start [--app-root <app-root>] [--install-root <install-root>] [--enable-kernel-install] [--disable-kernel-install] [--debug]', {
				appRoot: value('-a', '--app-root'), installRoot: value('--install-root'), enableKernel: flag('--enable-kernel-install'), disableKernel: flag('--disable-kernel-install'), timeout: {...value('--timeout'), since: '1.0.0'},
			}), rest);
			fs.mkdirSync(simRoot(), {recursive: true});
			writeJsonAtomically(paths.systemMarker(), {startedAt: new Date().toISOString()});
			return 'Launching container-apiserver...\nTesting access to container-apiserver...\n';
		}

		case 'stop': {
			parseArgs(spec('system stop', 'system stop [--prefix <prefix>] [--debug]', {prefix: value('-p', '--prefix')}), rest);
			for (const record of listContainers().filter(candidate => candidate.state === 'running')) {
				for (const pid of [record.mainPid, record.vmPid]) {
					if (alive(pid)) {
						try {
							process.kill(pid!, 'SIGKILL');
						} catch {}
					}
				}
			}

			fs.rmSync(paths.systemMarker(), {force: true});
			return '';
		}

		case 'status': {
			const parsed = parseArgs(spec('system status', 'system status [--prefix <prefix>] [--format <format>] [--debug]', {
				prefix: value('-p', '--prefix'), format: {...value('--format'), since: '0.10.0'},
			}), rest);
			const format = formatOf(parsed.value('format'));
			if (!systemStarted()) {
				const text = format === 'json'
					? `${JSON.stringify({status: 'unregistered', appRoot: '', installRoot: '', apiServerVersion: '', apiServerCommit: '', apiServerBuild: '', apiServerAppName: ''})}\n`
					: 'apiserver is not running and not registered with launchd\n';
				throw new CliError('', 1, text);
			}

			const status = {
				status: 'running', appRoot: `${simRoot()}/`, installRoot: '/usr/local/', logRoot: `${simRoot()}/logs/`,
				apiServerVersion: simVersion(), apiServerCommit: commit, apiServerBuild: 'release', apiServerAppName: 'container-apiserver',
			};
			if (format === 'json') {
				return `${JSON.stringify(status)}\n`;
			}

			return `${table([
				['FIELD', 'VALUE'], ['status', 'running'], ['app-root', status.appRoot], ['install-root', status.installRoot], ['log-root', status.logRoot],
				['apiserver-version', status.apiServerVersion], ['apiserver-commit', commit], ['apiserver-build', 'release'], ['apiserver-appname', status.apiServerAppName],
			])}\n`;
		}

		case 'version': {
			const parsed = parseArgs(spec('system version', 'system version [--format <format>] [--debug]', {format: value('--format')}), rest);
			const format = formatOf(parsed.value('format'));
			const versions = [{version: simVersion(), buildType: 'release', commit, appName: 'container'}];
			if (systemStarted()) {
				versions.push({version: simVersion(), buildType: 'release', commit, appName: 'container-apiserver'});
			}

			return format === 'json'
				? `${JSON.stringify(versions)}\n`
				: `${table([['COMPONENT', 'VERSION', 'BUILD', 'COMMIT'], ...versions.map(v => [v.appName, v.version, v.buildType, v.commit])])}\n`;
		}

		default:
			throw new CliError(`simulator: unknown or unsimulated subcommand 'container system ${sub ?? ''}'`, 64);
	}
};

export const volumeCommand = async (argv: readonly string[]): Promise<string> => {
	const [sub, ...rest] = argv;
	const volumes = readJson(paths.volumes(), volumeRecords) ?? [];
	switch (sub) {
		case 'create': {
			const parsed = parseArgs(spec('volume create', 'volume create [--label <label> ...] [--opt <opt> ...] [-s <s>] [--debug] <name>', {
				label: value('--label'), opt: value('--opt'), size: value('-s'),
			}), rest);
			const [name] = parsed.positionals;
			if (name === undefined) {
				throw new CliError('Missing expected argument \'<name>\'', 64);
			}

			requireSystem('failed to create volume');
			if (volumes.some(volume => volume.name === name)) {
				throw new CliError(`exists: "volume ${name} already exists"`);
			}

			const size = parsed.value('size');
			writeJsonAtomically(paths.volumes(), [...volumes, {
				name, labels: keyValues(parsed.values('label')), options: keyValues(parsed.values('opt')), createdAt: new Date().toISOString(),
				...(size === undefined ? {} : {sizeInBytes: parseSize(size)}),
			}]);
			return `${name}\n`;
		}

		case 'list':
		case 'ls': {
			const parsed = parseArgs(spec('volume list', 'volume list [--format <format>] [--quiet] [--debug]', {format: value('--format'), quiet: flag('-q', '--quiet')}), rest);
			const format = formatOf(parsed.value('format'));
			requireSystem('failed to list volumes');
			if (format === 'json') {
				return `${JSON.stringify(volumes.map(volume => ({...volume, driver: 'local', format: 'ext4', source: paths.volumeData(volume.name)})))}\n`;
			}

			if (parsed.flag('quiet')) {
				return volumes.map(volume => `${volume.name}\n`).join('');
			}

			return `${table([['NAME', 'DRIVER', 'OPTIONS'], ...volumes.map(volume => [volume.name, 'local', ''])])}\n`;
		}

		case 'delete':
		case 'rm': {
			const parsed = parseArgs(spec('volume delete', 'volume delete [--all] [--debug] [<names> ...]', {all: flag('-a', '--all')}), rest);
			requireSystem('failed to delete volumes');
			const doomed = parsed.flag('all') ? volumes.map(volume => volume.name) : parsed.positionals;
			for (const name of doomed) {
				if (!volumes.some(volume => volume.name === name)) {
					throw new CliError(`notFound: "volume ${name} not found"`);
				}

				fs.rmSync(paths.volumeData(name), {recursive: true, force: true});
			}

			writeJsonAtomically(paths.volumes(), volumes.filter(volume => !doomed.includes(volume.name)));
			return doomed.map(name => `${name}\n`).join('');
		}

		default:
			throw new CliError(`simulator: unknown or unsimulated subcommand 'container volume ${sub ?? ''}'`, 64);
	}
};

export const buildCommand = async (argv: readonly string[]): Promise<string> => {
	parseArgs(spec('build', 'build [<options>] [<context-dir>]', {
		arch: value('-a', '--arch'), buildArg: value('--build-arg'), cpus: value('-c', '--cpus'), file: value('-f', '--file'), label: value('-l', '--label'),
		memory: value('-m', '--memory'), noCache: flag('--no-cache'), output: value('-o', '--output'), os: value('--os'), platform: value('--platform'),
		progress: value('--progress'), pull: flag('--pull'), quiet: flag('-q', '--quiet'), secret: value('--secret'), tag: value('-t', '--tag'),
		target: value('--target'), vsockPort: value('--vsock-port'), dns: {...value('--dns'), since: '0.9.0'},
	}), argv);
	requireSystem('failed to build');
	throw new CliError('simulator: container build is not simulated (it needs the BuildKit builder image from a registry, and there is none here)');
};
