/** `container system …` and `container build` (parsed, recorded, refused); volumes are in ./volumes.ts. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {normaliseReference} from '../../../src/oci/index.js';
import {imageCommand, loadArchive} from './images.js';
import {parseArgs, table, type CommandSpec, type OptionSpec} from './args.js';
import {
	alive, CliError, listContainers, paths, requireSystem, simRoot, simVersion, cliJson, systemStarted, versionAtLeast, writeJsonAtomically,
} from './state.js';

const flag = (...names: string[]): OptionSpec => ({names, value: false});
const value = (...names: string[]): OptionSpec => ({names, value: true});
const spec = <K extends string>(name: string, usage: string, options: Record<K, OptionSpec>): CommandSpec & {options: Record<K, OptionSpec>} =>
	({path: `container ${name}`, usage: `container ${usage}`, options});

const commit = 'simulated';
/** ReleaseVersion.singleLine(appName:) (ContainerVersion/ReleaseVersion.swift): the apiserver's version as status and version print it. */
const serverVersionLine = (): string => `container-apiserver version ${simVersion()} (build: release, commit: ${commit})`;

const formatOf = (format: string | undefined): 'json' | 'table' => {
	if (format === undefined || format === 'table' || format === 'json') {
		return format ?? 'table';
	}

	throw new CliError(`The value '${format}' is invalid for '--format <format>'`, 64);
};

/**
 * `system status --format json`. 0.10.0 to 1.3.x (PrintableStatus, System/SystemStatus.swift; 1.3.x
 * was not read and is taken to be flat): flat, logRoot left out when nil, every other field ""
 * when not running; 0.x keys in declaration order, 1.x sorted. 1.4.x (per issue 11, 1.4.1):
 * nested `{paths, server, status}`, only `{status}` when not running.
 */
const statusJson = (running: boolean): string => {
	if (versionAtLeast('1.4.0')) {
		return cliJson(running
			? {status: 'running', paths: {appRoot: `${simRoot()}/`, installRoot: '/usr/local/', logRoot: `${simRoot()}/logs/`}, server: {version: serverVersionLine(), build: 'release', commit, appName: 'container-apiserver'}}
			: {status: 'unregistered'});
	}

	const status = running
		? {status: 'running', appRoot: `${simRoot()}/`, installRoot: '/usr/local/', logRoot: `${simRoot()}/logs/`, apiServerVersion: serverVersionLine(), apiServerCommit: commit, apiServerBuild: 'release', apiServerAppName: 'container-apiserver'}
		: {status: 'unregistered', appRoot: '', installRoot: '', apiServerVersion: '', apiServerCommit: '', apiServerBuild: '', apiServerAppName: ''};
	return cliJson(status);
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
			const running = systemStarted();
			const json = `${statusJson(running)}\n`;
			if (!running) {
				throw new CliError('', 1, format === 'json' ? json : 'apiserver is not running and not registered with launchd\n');
			}

			if (format === 'json') {
				return json;
			}

			return `${table([
				['FIELD', 'VALUE'], ['status', 'running'], ['appRoot', `${simRoot()}/`], ['installRoot', '/usr/local/'], ['logRoot', `${simRoot()}/logs/`],
				['apiserver.version', serverVersionLine()], ['apiserver.commit', commit], ['apiserver.build', 'release'], ['apiserver.appName', 'container-apiserver'],
			])}\n`;
		}

		case 'version': {
			if (!versionAtLeast('0.10.0')) {
				throw new CliError('Unexpected argument \'version\'\nUsage: container system <subcommand>\n  See \'container system --help\' for more information.', 64);
			}

			const parsed = parseArgs(spec('system version', 'system version [--format <format>] [--debug]', {format: value('--format')}), rest);
			const format = formatOf(parsed.value('format'));
			// VersionInfo (System/SystemVersion.swift): the CLI, then the apiserver when it answers.
			const versions = [{version: simVersion(), buildType: 'release', commit, appName: 'container'}];
			if (systemStarted()) {
				versions.push({version: serverVersionLine(), buildType: 'release', commit, appName: 'container-apiserver'});
			}

			return format === 'json'
				? `${cliJson(versions)}\n`
				: `${table([['COMPONENT', 'VERSION', 'BUILD', 'COMMIT'], ...versions.map(v => [v.appName, v.version, v.buildType, v.commit])])}\n`;
		}

		default:
			throw new CliError(`simulator: unknown or unsimulated subcommand 'container system ${sub ?? ''}'`, 64);
	}
};


/**
 * One `-o/--output` value as Builder.BuildExport(from:) reads it (ContainerBuild/Builder.swift
 * 1.2.2): `type` required; tar and local need `dest`; a `dest` that exists and is not a folder is
 * refused; a folder `dest` means dest/out.tar (out.tar.1, … if taken).
 */
const buildExport = (raw: string): {type: string; dest: string | undefined} => {
	const fields = Object.fromEntries(raw.split(',').map(pair => pair.split('=')).filter(parts => parts.length === 2).map(([key, item]) => [key!.trim(), item!.trim()]));
	let dest = fields['dest'] === undefined ? undefined : path.resolve(fields['dest']);
	if (dest !== undefined && fs.existsSync(dest)) {
		if (!fs.statSync(dest).isDirectory()) {
			throw new CliError(`invalidExport: "${fields['dest']}: dest path already exists"`);
		}

		let candidate = path.join(dest, 'out.tar');
		for (let index = 1; fs.existsSync(candidate); index++) {
			candidate = path.join(dest, `out.tar.${index}`);
		}

		dest = candidate;
	}

	const type = fields['type'];
	if (type === undefined) {
		throw new CliError(`invalidExport: "${raw}: type field is required"`);
	}

	if (!['oci', 'tar', 'local'].includes(type)) {
		throw new CliError(`invalidExport: "${raw}: unsupported output type"`);
	}

	if (type !== 'oci' && dest === undefined) {
		throw new CliError(`invalidExport: "${raw}: dest field is required"`);
	}

	return {type, dest};
};

/**
 * `container build` (Sources/ContainerCommands/BuildCommand.swift 1.2.2). BuildKit is not
 * simulated: $CONTAINER_SIM_BUILD_RESULT names an OCI archive that stands for what the builder
 * shim exports (it always writes <appRoot>/builder/<buildID>/out.tar, whatever `dest` says);
 * without it the build fails as one without a registry would. Then, as the CLI does: `oci` loads
 * the file at `dest` if given (which nobody wrote: the load fails), else out.tar, and tags every
 * image with each -t; `tar` moves out.tar to `dest`; `local` is not simulated.
 */
export const buildCommand = async (argv: readonly string[]): Promise<string> => {
	const parsed = parseArgs(spec('build', 'build [<options>] [<context-dir>]', {
		arch: value('-a', '--arch'), buildArg: value('--build-arg'), cpus: value('-c', '--cpus'), file: value('-f', '--file'), label: value('-l', '--label'),
		memory: value('-m', '--memory'), noCache: flag('--no-cache'), output: value('-o', '--output'), os: value('--os'), platform: value('--platform'),
		progress: value('--progress'), pull: flag('--pull'), quiet: flag('-q', '--quiet'), secret: value('--secret'), tag: value('-t', '--tag'),
		target: value('--target'), vsockPort: value('--vsock-port'), dns: {...value('--dns'), since: '0.9.0'},
	}), argv);
	const contextDir = parsed.positionals[0] ?? '.';
	if (!fs.existsSync(contextDir)) {
		throw new CliError(`context dir does not exist ${contextDir}`, 64);
	}

	const exports = (parsed.values('output').length === 0 ? ['type=oci'] : parsed.values('output')).map(buildExport);
	requireSystem('failed to build');
	const result = process.env['CONTAINER_SIM_BUILD_RESULT'];
	if (result === undefined || result === '') {
		throw new CliError('simulator: container build is not simulated (it needs the BuildKit builder image from a registry, and there is none here; CONTAINER_SIM_BUILD_RESULT names a stand-in result)');
	}

	const buildDir = path.join(simRoot(), 'builder', crypto.randomUUID().toUpperCase());
	fs.mkdirSync(buildDir, {recursive: true});
	try {
		const outTar = path.join(buildDir, 'out.tar');
		fs.copyFileSync(result, outTar);
		const tags = parsed.values('tag').map(tag => normaliseReference(tag));
		let finalMessage = tags.join('\n');
		for (const exported of exports) {
			if (exported.type === 'oci') {
				const loaded = await loadArchive(exported.dest ?? outTar);
				for (const tag of tags) {
					for (const reference of loaded) {
						await imageCommand(['tag', reference, tag]);
					}
				}
			} else if (exported.type === 'tar') {
				fs.renameSync(outTar, exported.dest!);
				finalMessage = exported.dest!;
			} else {
				throw new CliError('simulator: --output type=local is not simulated');
			}
		}

		return `${finalMessage}\n`;
	} finally {
		fs.rmSync(buildDir, {recursive: true, force: true});
	}
};
