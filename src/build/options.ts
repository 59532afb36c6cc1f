/**
 * Turns raw `exobuild build` option strings into a BuildRequest, with buildx's grammar.
 * Every rejection is a UserError with a one-line cause and a hint.
 */
import fs from 'node:fs';
import path from 'node:path';
import {UserError} from '../errors.js';
import {hostPlatform, parsePlatforms, supportedPlatformIds} from '../platforms/parse.js';
import {
	buildContextSchema, driverNames, engineNames, outputSchema, progressModes,
	type BuildContext, type BuildRequest, type OutputSpec,
} from './request.js';

export interface RawBuildOptions {
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
	cpus?: string;
	memory?: string;
	virtualization?: boolean;
	rosetta?: boolean;
}

const usage = (message: string, hint: string): UserError => new UserError(message, {hint, code: 'E_USAGE'});

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

const csv = (value: string): Map<string, string> => {
	const fields = new Map<string, string>();
	for (const part of value.split(',')) {
		const eq = part.indexOf('=');
		if (eq <= 0) {
			throw usage(`invalid --output "${value}": "${part}" is not key=value`, 'e.g. --output type=oci,dest=image.tar');
		}

		fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
	}

	return fields;
};

export const parseOutput = (values: readonly string[], cwd: string): OutputSpec | undefined => {
	if (values.length === 0) {
		return undefined;
	}

	if (values.length > 1) {
		throw usage('only one --output is supported', 'give a single --output type=oci,dest=FILE');
	}

	const fields = csv(values[0]!);
	const type = fields.get('type');
	if (type === undefined) {
		throw usage(`--output "${values[0]}" has no type=`, 'use --output type=oci,dest=FILE');
	}

	if (type !== 'oci') {
		throw usage(`--output type=${type} is not supported yet`, 'supported: type=oci,dest=FILE (an OCI image archive; one platform gives a manifest, several an image index)');
	}

	const dest = fields.get('dest');
	if (dest === undefined || dest === '') {
		throw usage('--output type=oci needs dest=FILE', 'e.g. --output type=oci,dest=image.tar');
	}

	if (dest === '-') {
		throw usage('--output dest=- (stdout) is not supported yet', 'write to a file: dest=image.tar');
	}

	for (const key of fields.keys()) {
		if (key !== 'type' && key !== 'dest') {
			throw usage(`--output option "${key}" is not supported yet`, 'supported options of type=oci: dest');
		}
	}

	const absolute = path.resolve(cwd, dest);
	const folder = path.dirname(absolute);
	if (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory()) {
		throw usage(`--output dest: folder ${folder} does not exist`, 'create it first, or choose another dest');
	}

	if (fs.existsSync(absolute) && fs.statSync(absolute).isDirectory()) {
		throw usage(`--output dest: ${absolute} is a folder`, 'type=oci writes one archive file; name a file');
	}

	return outputSchema.parse({type, dest: absolute});
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

	if (raw.file === '-') {
		throw usage('-f - (Dockerfile from stdin) is not supported yet', 'write the Dockerfile to a file and pass -f FILE');
	}

	const dockerfile = raw.file === undefined ? path.join(contextDir, 'Dockerfile') : path.resolve(cwd, raw.file);
	if (!fs.existsSync(dockerfile)) {
		throw usage(`Dockerfile ${dockerfile} not found`, raw.file === undefined ? 'add a Dockerfile to the context, or name one with -f FILE' : 'check the path given to -f');
	}

	if (!fs.statSync(dockerfile).isFile()) {
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

	const tags = parseTags(raw.tag);
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

	return {
		contextDir,
		dockerfile,
		platforms,
		tags,
		buildArgs: parseBuildArgs(raw.buildArg, env, warn),
		target,
		noCache: !raw.cache,
		buildContexts: parseBuildContexts(raw.buildContext, cwd),
		output: parseOutput(raw.output, cwd),
		progress: oneOf('--progress', raw.progress, progressModes),
		engine: oneOf('--engine', raw.engine, engineNames),
		driver: oneOf('--driver', raw.driver, driverNames),
		load: raw.load === true,
		runtimeOptions: {
			...(cpus === undefined ? {} : {cpus}),
			...(raw.memory === undefined ? {} : {memory: raw.memory}),
			...(raw.virtualization === true ? {virtualization: true} : {}),
			...(raw.rosetta === true ? {rosetta: true} : {}),
		},
	};
};

