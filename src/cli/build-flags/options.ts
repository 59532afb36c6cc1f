/**
 * Turns raw `exobuild build` option strings into a BuildRequest, with buildx's grammar.
 * Every rejection is a UserError with a one-line cause and a hint.
 */
import fs from 'node:fs';
import path from 'node:path';
import {driverNames} from '../../sandboxes/index.js';
import {engines} from '../../engines/index.js';
import type {EngineName} from '../../engines/plan.js';
import {UserError} from '../../errors.js';
import {resolveFileDestination, resolveLayoutFolderDestination} from '../../outputs/destination.js';
import {hostPlatform, parsePlatforms, supportedPlatformIds, type Platform} from '../../platforms/parse.js';
import {parseNodeName} from '../../nodes/address.js';
import {parseCache} from './cache-options.js';
import {parseEngineOptions, type RawEngineOptions, type SshSource} from './engine-options.js';
import {csv, usage} from './option-values.js';
import {
	buildContextSchema, engineNames, outputSchema, progressModes,
	type BuildContext, type BuildRequest, type NodeChoice, type OutputSpec,
} from '../../request/build-request.js';

export interface RawBuildOptions extends RawEngineOptions {
	platform: string[];
	file?: string;
	tag: string[];
	buildArg: string[];
	target?: string;
	cache: boolean;
	buildContext: string[];
	output: string[];
	progress: string;
	engine: string;
	driver: string;
	load?: boolean;
	cacheFrom?: string[];
	hangTimeout?: string;
	push?: boolean;
	quiet?: boolean;
	metadataFile?: string;
	iidfile?: string;
	cacheTo?: string[];
	cpus?: string;
	memory?: string;
	virtualization?: boolean;
	rosetta?: boolean;
	node?: string[];
	fallback?: string;
}

/** `--node NAME[=P,P]` values: names in buildx's grammar, each platform one the build asks for and given to one node only. */
export const parseNodeChoices = (values: readonly string[], platforms: readonly Platform[]): NodeChoice[] => {
	const taken = new Map<string, string>();
	const names = new Set<string>();
	return values.map(value => {
		const equals = value.indexOf('=');
		const rawName = equals === -1 ? value : value.slice(0, equals);
		let name: string;
		try {
			name = parseNodeName(rawName);
		} catch (error) {
			throw usage(`--node ${value}: ${(error as Error).message}`, 'give --node NAME or --node NAME=PLATFORM[,PLATFORM] with a name from `exobuild node ls`');
		}

		if (names.has(name)) {
			throw usage(`--node ${name} is given twice`, 'give each node once, with all its platforms: --node NAME=P1,P2');
		}

		names.add(name);
		if (equals === -1) {
			return {name, platforms: undefined};
		}

		if (value.slice(equals + 1).trim() === '') {
			throw usage(`--node ${value}: no platform after =`, 'give --node NAME=PLATFORM[,PLATFORM], or --node NAME for the platforms it serves');
		}

		let chosen: Platform[];
		try {
			chosen = parsePlatforms([value.slice(equals + 1)]);
		} catch (error) {
			throw usage(`--node ${value}: ${(error as Error).message}`, `supported platforms: ${supportedPlatformIds().join(', ')}`);
		}

		for (const platform of chosen) {
			if (!platforms.some(asked => asked.id === platform.id)) {
				throw usage(`--node ${value}: ${platform.id} is not a platform of this build`, `add it to --platform (asked: ${platforms.map(asked => asked.id).join(', ')})`);
			}

			const other = taken.get(platform.id);
			if (other !== undefined) {
				throw usage(`--node: ${platform.id} is given to both ${other} and ${name}`, 'give each platform to one node');
			}

			taken.set(platform.id, name);
		}

		return {name, platforms: chosen};
	});
};


const readStdin = (): string => {
	try {
		return fs.readFileSync(0, 'utf8');
	} catch (error) {
		throw usage(`-f -: cannot read stdin (${(error as Error).message})`, 'pipe the Dockerfile in, e.g. exobuild build -f - . < Dockerfile');
	}
};

/** --build-context NAME=DIR (a local folder, no scheme) goes to the engine as is; the rest are parsed by parseBuildContexts. */
const splitBuildContexts = (values: readonly string[], cwd: string): {layoutContexts: string[]; localContexts: Array<[string, string]>} => {
	const layoutContexts: string[] = [];
	const localContexts: Array<[string, string]> = [];
	for (const value of values) {
		const eq = value.indexOf('=');
		const source = eq <= 0 ? '' : value.slice(eq + 1);
		const folder = path.resolve(cwd, source);
		if (source !== '' && !/^[a-z-]+:\/\//.test(source) && fs.existsSync(folder) && fs.statSync(folder).isDirectory() && !fs.existsSync(path.join(folder, 'oci-layout'))) {
			const name = value.slice(0, eq);
			if (!/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/.test(name) || localContexts.some(([other]) => other === name)) {
				throw usage(`invalid --build-context name "${name}" for a local folder`, 'a stage-like name, given once, e.g. --build-context assets=./assets');
			}

			localContexts.push([name, folder]);
		} else {
			layoutContexts.push(value);
		}
	}

	return {layoutContexts, localContexts};
};

/**
 * A file written after the build (--metadata-file, --iidfile): checked now as every file output
 * is (src/outputs/destination.ts), so a folder, a socket or an unwritable folder is refused
 * before anything starts.
 */
const resultFile = (flag: string, value: string | undefined, cwd: string): string | undefined => {
	if (value === undefined) {
		return undefined;
	}

	const absolute = path.resolve(cwd, value);
	checkFileDestination(flag, absolute);
	return absolute;
};

/** resolveFileDestination's refusal, naming the flag. */
const checkFileDestination = (flag: string, absolute: string): void => {
	try {
		resolveFileDestination(absolute);
	} catch (error) {
		if (error instanceof UserError) {
			throw new UserError(`${flag} ${error.message.replace(/^output /, '')}`, {hint: error.hint, code: error.code, exitCode: error.exitCode, cause: error});
		}

		throw error;
	}
};

/** A step silent and idle this long is taken for an emulator hang. */
export const defaultHangTimeout = '10m';

/** "90", "90s", "10m", "1h" → seconds. */
export const parseDuration = (flag: string, value: string): number => {
	const match = /^(\d+)(s|m|h)?$/.exec(value.trim());
	if (!match) {
		throw usage(`invalid ${flag} "${value}"`, `a duration such as 300s, 10m or 1h (0 turns it off)`);
	}

	return Number(match[1]) * ({s: 1, m: 60, h: 3600} as Record<string, number>)[match[2] ?? 's']!;
};

const buildArgKey = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `K=V` sets K; a bare `K` takes K's value from the environment (and is skipped, with a warning, when unset). */
export const parseBuildArgs = (values: readonly string[], env: NodeJS.ProcessEnv, warn: (message: string) => void): Array<[string, string]> => {
	const result: Array<[string, string]> = [];
	for (const value of values) {
		const eq = value.indexOf('=');
		const key = eq === -1 ? value : value.slice(0, eq);
		if (!buildArgKey.test(key)) {
			throw usage(`invalid --build-arg "${value}": "${key}" is not a valid argument name`, 'use --build-arg NAME=VALUE, or --build-arg NAME to pass NAME from the environment');
		}

		if (eq === -1) {
			const fromEnv = env[key];
			if (fromEnv === undefined) {
				warn(`--build-arg ${key}: ${key} is not set in the environment, so it is not passed (as docker build does)`);
				continue;
			}

			result.push([key, fromEnv]);
		} else {
			result.push([key, value.slice(eq + 1)]);
		}
	}

	return result;
};

// docker/distribution reference grammar, simplified: [host[:port]/]path[:tag][@digest]
const pathComponent = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const hostPart = '(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?';
export const imageReference = new RegExp(`^${hostPart}${pathComponent}(?:/${pathComponent})*(?::[\\w][\\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$`);

export const parseTags = (values: readonly string[]): string[] => {
	for (const tag of values) {
		if (tag.length > 255 || !imageReference.test(tag)) {
			throw usage(`invalid tag "${tag}": not a valid image reference`, 'tags look like name, name:tag or registry.example:5000/path/name:tag (lower case)');
		}
	}

	return [...new Set(values)];
};

/** `NAME=oci-layout://DIR[:TAG][@sha256:D]` (buildx's syntax and meaning). */
export const parseBuildContexts = (values: readonly string[], cwd: string): BuildContext[] => {
	const names = new Set<string>();
	return values.map(value => {
		const eq = value.indexOf('=');
		if (eq <= 0) {
			throw usage(`invalid --build-context "${value}": expected NAME=VALUE`, 'e.g. --build-context base=oci-layout:///path/to/layout');
		}

		const name = value.slice(0, eq);
		const source = value.slice(eq + 1);
		if (!/^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$/.test(name)) {
			throw usage(`invalid --build-context name "${name}"`, 'the name is what FROM or COPY --from refers to, e.g. "base" or "debian:stable"');
		}

		if (names.has(name)) {
			throw usage(`--build-context "${name}" is given twice`, 'give each name once');
		}

		names.add(name);
		const prefix = 'oci-layout://';
		if (!source.startsWith(prefix)) {
			const kind = /^[a-z-]+:\/\//.exec(source)?.[0] ?? 'a local directory';
			throw usage(`--build-context ${name}: ${kind} sources are not supported yet`, `only ${prefix}DIR[@sha256:DIGEST] (an OCI image layout folder) is supported; it satisfies FROM ${name} without a registry`);
		}

		let rest = source.slice(prefix.length);
		let digest: string | undefined;
		const at = rest.lastIndexOf('@');
		if (at !== -1) {
			digest = rest.slice(at + 1);
			rest = rest.slice(0, at);
			if (!/^sha256:[a-f0-9]{64}$/.test(digest)) {
				throw usage(`--build-context ${name}: "${digest}" is not a sha256 digest`, 'write oci-layout://DIR@sha256:<64 hex digits>');
			}
		}

		let ref: string | undefined;
		const colon = rest.lastIndexOf(':');
		if (colon > rest.lastIndexOf('/') && colon !== -1) {
			ref = rest.slice(colon + 1);
			rest = rest.slice(0, colon);
		}

		if (rest === '') {
			throw usage(`--build-context ${name}: no folder given`, 'write oci-layout://DIR');
		}

		const layoutDir = path.resolve(cwd, rest);
		if (!fs.existsSync(path.join(layoutDir, 'index.json')) || !fs.existsSync(path.join(layoutDir, 'oci-layout'))) {
			throw usage(`--build-context ${name}: ${layoutDir} is not an OCI image layout (no index.json / oci-layout file)`, 'point it at a folder written by an OCI exporter (e.g. `buildctl … --output type=oci,tar=false`) or untar an OCI archive first');
		}

		return buildContextSchema.parse({name, layoutDir, ...(ref === undefined ? {} : {ref}), ...(digest === undefined ? {} : {digest})});
	});
};

/** The output types buildx has that exobuild refuses, with why. */
const refusedOutputTypes: Record<string, string> = {
	cacheonly: 'type=cacheonly is not supported: every build already keeps its cache (see --cache-to)',
};

/**
 * `-o/--output` with buildx's grammar: `type=oci|docker|local|tar[,dest=…][,name=…][,tar=false]`,
 * `-o DIR` (type=local) and `-o -` (type=tar to stdout). Returns the target and any names given
 * with name= (they join the -t tags).
 */
export const parseOutput = (values: readonly string[], cwd: string): {target: OutputSpec | undefined; names: string[]; push?: boolean} => {
	if (values.length === 0) {
		return {target: undefined, names: []};
	}

	// type=registry = type=image,push=true: the image goes to a registry, named by name= (or -t).
	const registry = /^type=(image|registry)(,|$)/.exec(values[0] ?? '');
	if (values.length === 1 && registry !== null) {
		const fields = csv(values[0]!);
		for (const key of fields.keys()) {
			if (!['type', 'name', 'push'].includes(key)) {
				throw usage(`--output type=${registry[1]} option "${key}" is not supported`, `supported: name=REF, push=true`);
			}
		}

		if (registry[1] === 'image' && fields.get('push') !== 'true') {
			throw usage('--output type=image without push=true keeps the image nowhere: a sandbox has no image store', 'add push=true to push it, or use --load (apple-container) or type=oci,dest=FILE');
		}

		return {target: undefined, names: (fields.get('name') ?? '').split(/[+;]/).map(name => name.trim()).filter(Boolean), push: true};
	}

	if (values.length > 1) {
		throw usage('only one --output is supported', 'give a single --output, e.g. --output type=oci,dest=image.tar');
	}

	const value = values[0]!;
	if (value === '-') {
		return {target: outputSchema.parse({type: 'tar', dest: '-'}), names: []};
	}

	if (!value.includes('=')) {
		return {target: outputSchema.parse({type: 'local', dest: checkedDest(path.resolve(cwd, value), 'local')}), names: []};
	}

	const fields = csv(value);
	const type = fields.get('type');
	if (type === undefined) {
		throw usage(`--output "${value}" has no type=`, 'e.g. --output type=oci,dest=image.tar, -o DIR (local) or -o - (tar to stdout)');
	}

	if (refusedOutputTypes[type] !== undefined) {
		throw usage(`--output type=${type} is not supported`, refusedOutputTypes[type]);
	}

	if (!['oci', 'docker', 'local', 'tar'].includes(type)) {
		throw usage(`unknown --output type=${type}`, 'supported: oci, docker, local, tar');
	}

	const allowed = new Set(['type', 'dest', ...(type === 'oci' || type === 'docker' ? ['name'] : []), ...(type === 'oci' ? ['tar'] : []), ...(type === 'local' ? ['keep-owners'] : [])]);
	for (const key of fields.keys()) {
		if (!allowed.has(key)) {
			throw usage(`--output type=${type} option "${key}" is not supported`, `supported options of type=${type}: ${[...allowed].filter(option => option !== 'type').join(', ')}`);
		}
	}

	const tarOption = fields.get('tar');
	if (tarOption !== undefined && tarOption !== 'true' && tarOption !== 'false') {
		throw usage(`--output tar=${tarOption} is not true or false`, 'tar=false writes an OCI layout folder instead of an archive');
	}

	const keepOwners = fields.get('keep-owners');
	if (keepOwners !== undefined && keepOwners !== 'true' && keepOwners !== 'false') {
		throw usage(`--output keep-owners=${keepOwners} is not true or false`, 'keep-owners=true keeps the image\'s owners and setuid/setgid bits (root only)');
	}

	const folder = type === 'local' || tarOption === 'false';
	const dest = fields.get('dest');
	if (dest === undefined || dest === '') {
		throw usage(`--output type=${type} needs dest=${folder ? 'DIR' : 'FILE'}`, `e.g. --output type=${type},dest=${folder ? 'out' : 'image.tar'}`);
	}

	const names = (fields.get('name') ?? '').split(/[+;]/).map(name => name.trim()).filter(Boolean);
	const target = outputSchema.safeParse({
		type, dest: dest === '-' ? '-' : checkedDest(path.resolve(cwd, dest), type === 'local' ? 'local' : (folder ? 'folder' : 'file')),
		...(tarOption === undefined ? {} : {tar: tarOption === 'true'}),
		...(keepOwners === undefined ? {} : {keepOwners: keepOwners === 'true'}),
	});
	if (!target.success) {
		const issue = target.error.issues[0];
		throw usage(`invalid --output "${value}": ${issue?.message ?? 'bad value'}`, issue?.path[0] === 'keepOwners' ? 'drop keep-owners=true (files then belong to you), or run as root' : 'dest=- (stdout) is for archives; folders need a path');
	}

	return {target: target.data, names};
};

/**
 * The folder a dest goes in must exist. A file dest is checked as every file output is
 * (src/outputs/destination.ts: no folder, block device or socket, a folder that can be written);
 * an oci layout folder must be a folder, new, empty or a layout; a local dest not a file.
 */
const checkedDest = (absolute: string, kind: 'file' | 'folder' | 'local'): string => {
	if (kind === 'file') {
		checkFileDestination('--output dest:', absolute);
		return absolute;
	}

	if (kind === 'folder') {
		try {
			resolveLayoutFolderDestination(absolute);
		} catch (error) {
			if (error instanceof UserError) {
				throw new UserError(`--output dest: ${error.message.replace(/^output /, '')}`, {hint: error.hint, code: error.code, exitCode: error.exitCode, cause: error});
			}

			throw error;
		}

		return absolute;
	}

	const parent = path.dirname(absolute);
	if (!fs.existsSync(parent) || !fs.statSync(parent).isDirectory()) {
		throw usage(`--output dest: folder ${parent} does not exist`, 'create it first, or choose another dest');
	}

	const stat = fs.existsSync(absolute) ? fs.statSync(absolute) : undefined;
	if (stat !== undefined && !stat.isDirectory()) {
		throw usage(`--output dest: ${absolute} is a file`, 'this output type writes a folder; name a folder');
	}

	return absolute;
};

/** The engine a build runs in, once `auto` is resolved against the builder image. */
export type ResolvedEngine = EngineName;

/**
 * What the engine cannot carry out (its capabilities: src/engines/<engine>/capabilities.ts),
 * refused before any sandbox starts (exit 2). `why` says how the engine was chosen.
 */
export const refuseForEngine = (request: BuildRequest, engine: ResolvedEngine, why: string): void => {
	const refusal = engines[engine].refuse(request);
	if (refusal !== undefined) {
		throw new UserError(`${refusal.message} (${why})`, {hint: refusal.hint, code: 'E_ENGINE_UNSUPPORTED', exitCode: 2});
	}
};

/** The start of an OpenSSH or PEM private key file. */
const privateKeyPattern = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;

/**
 * --ssh takes an ssh-agent socket or a readable private key file, nothing else: a folder, a
 * FIFO, a device or a file that holds no key is refused at once (a FIFO is never opened).
 */
export const checkSshSources = (sources: readonly SshSource[]): void => {
	for (const source of sources) {
		const refuse = (why: string): never => {
			throw new UserError(`--ssh ${source.id}: ${source.path} ${why}`, {
				hint: 'give an ssh-agent socket (default: $SSH_AUTH_SOCK) or a private key file: --ssh ID=~/.ssh/id_ed25519',
				code: 'E_USAGE', exitCode: 2,
			});
		};

		let stat: fs.Stats;
		try {
			stat = fs.statSync(source.path);
		} catch {
			return refuse('does not exist');
		}

		if (stat.isSocket()) {
			continue;
		}

		if (!stat.isFile()) {
			refuse(`is ${stat.isDirectory() ? 'a folder' : (stat.isFIFO() ? 'a FIFO' : 'not a file')}, not a socket or a key file`);
		}

		// O_NONBLOCK: should the path have become a FIFO since the stat, opening it does not wait.
		let head: string;
		try {
			const fd = fs.openSync(fs.realpathSync(source.path), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
			try {
				if (!fs.fstatSync(fd).isFile()) {
					return refuse('is not a socket or a key file');
				}

				const buffer = Buffer.alloc(Math.min(stat.size, 65_536));
				head = buffer.subarray(0, fs.readSync(fd, buffer, 0, buffer.length, 0)).toString('latin1');
			} finally {
				fs.closeSync(fd);
			}
		} catch (error) {
			if (error instanceof UserError) {
				throw error;
			}

			return refuse(`cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
		}

		if (!privateKeyPattern.test(head)) {
			refuse('is not a private key file (no "-----BEGIN … PRIVATE KEY-----" line)');
		}
	}
};

const oneOf = <T extends string>(flag: string, value: string, allowed: readonly T[]): T => {
	if (!(allowed as readonly string[]).includes(value)) {
		throw usage(`invalid ${flag} "${value}"`, `choose one of: ${allowed.join(', ')}`);
	}

	return value as T;
};

export const toBuildRequest = (
	contextArg: string | undefined,
	raw: RawBuildOptions,
	{cwd, env, warn}: {cwd: string; env: NodeJS.ProcessEnv; warn: (message: string) => void},
): BuildRequest => {
	if (contextArg === undefined || contextArg === '') {
		throw usage('no build context given', 'exobuild build [options] CONTEXT, e.g. exobuild build --platform linux/ppc64le .');
	}

	if (contextArg === '-' || /^[a-z]+:\/\//.test(contextArg) || contextArg.startsWith('git@')) {
		throw usage(`context "${contextArg}" is not supported yet`, 'give a local folder as the build context');
	}

	const contextDir = path.resolve(cwd, contextArg);
	if (!fs.existsSync(contextDir)) {
		throw usage(`build context ${contextDir} does not exist`, 'check the path of the last argument');
	}

	if (!fs.statSync(contextDir).isDirectory()) {
		throw usage(`build context ${contextDir} is not a folder`, 'the last argument is the folder holding the files the Dockerfile uses');
	}

	// -f -: the Dockerfile is read from stdin here; the build writes it into its scratch folder.
	const dockerfileText = raw.file === '-' ? readStdin() : undefined;
	if (dockerfileText !== undefined && dockerfileText.trim() === '') {
		throw usage('-f -: stdin held no Dockerfile', 'pipe the Dockerfile in, e.g. exobuild build -f - . < Dockerfile');
	}

	const dockerfile = raw.file === undefined ? path.join(contextDir, 'Dockerfile') : (dockerfileText === undefined ? path.resolve(cwd, raw.file) : path.join(contextDir, 'Dockerfile.stdin'));
	if (dockerfileText === undefined && !fs.existsSync(dockerfile)) {
		throw usage(`Dockerfile ${dockerfile} not found`, raw.file === undefined ? 'add a Dockerfile to the context, or name one with -f FILE' : 'check the path given to -f');
	}

	if (dockerfileText === undefined && !fs.statSync(dockerfile).isFile()) {
		throw usage(`Dockerfile ${dockerfile} is not a file`, 'pass the Dockerfile itself with -f, not its folder');
	}

	let platforms = parsePlatforms(raw.platform);
	if (platforms.length === 0) {
		const host = hostPlatform();
		if (host === undefined) {
			throw usage(`this machine's architecture (${process.arch}) is not one exobuild knows`, `pass --platform; supported: ${supportedPlatformIds().join(', ')}`);
		}

		platforms = [host];
	}

	const output = parseOutput(raw.output, cwd);
	const push = raw.push === true || output.push === true;
	const {layoutContexts, localContexts} = splitBuildContexts(raw.buildContext, cwd);
	const tags = parseTags([...raw.tag, ...output.names]);
	if (push && tags.length === 0) {
		throw usage('--push needs a name for the image', 'add -t REGISTRY/REPOSITORY:TAG (or name= in --output type=registry)');
	}

	if (raw.load === true && tags.length === 0) {
		throw usage('--load needs a name for the image', 'add -t NAME[:TAG] (the image store keeps images by name)');
	}

	let cpus: number | undefined;
	if (raw.cpus !== undefined) {
		cpus = Number(raw.cpus);
		if (!/^\d+$/.test(raw.cpus) || cpus < 1) {
			throw usage(`invalid --cpus "${raw.cpus}"`, 'a whole number of CPUs for the sandbox VM, e.g. --cpus 4');
		}
	}

	const target = raw.target;
	if (target !== undefined && !/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/.test(target)) {
		throw usage(`invalid --target "${target}"`, 'a stage name as written after AS in the Dockerfile');
	}

	const engineOptions = parseEngineOptions(raw, cwd, env, localContexts);
	checkSshSources(engineOptions.ssh);
	const request: BuildRequest = {
		contextDir,
		dockerfile,
		platforms,
		tags,
		buildArgs: parseBuildArgs(raw.buildArg, env, warn),
		target,
		noCache: !raw.cache,
		cache: parseCache(raw.cacheFrom ?? [], raw.cacheTo ?? [], cwd),
		hangTimeoutSeconds: parseDuration('--hang-timeout', raw.hangTimeout ?? defaultHangTimeout),
		dockerfileText,
		buildContexts: parseBuildContexts(layoutContexts, cwd),
		engineOptions,
		output: output.target,
		progress: raw.quiet === true ? 'quiet' : oneOf('--progress', raw.progress, progressModes),
		metadataFile: resultFile('--metadata-file', raw.metadataFile, cwd),
		iidFile: resultFile('--iidfile', raw.iidfile, cwd),
		engine: oneOf('--engine', raw.engine, engineNames),
		driver: oneOf('--driver', raw.driver, driverNames),
		load: raw.load === true,
		push,
		driverOptions: {
			...(cpus === undefined ? {} : {cpus}),
			...(raw.memory === undefined ? {} : {memory: raw.memory}),
			...(raw.virtualization === true ? {virtualization: true} : {}),
			...(raw.rosetta === true ? {rosetta: true} : {}),
		},
		routing: {
			nodes: parseNodeChoices(raw.node ?? [], platforms),
			fallback: raw.fallback === undefined ? 'none' : oneOf('--fallback', raw.fallback, ['local'] as const),
		},
	};
	// auto is resolved against the builder image later (src/engines/index.ts chooseEngine), and refused then.
	if (request.engine !== 'auto') {
		refuseForEngine(request, request.engine, `--engine ${request.engine}`);
	}

	return request;
};

