/**
 * The build flags that go through to the engine, with buildx's grammar: --label, --annotation,
 * --no-cache-filter, --pull, --network, --add-host, --secret, --ssh, --shm-size, --ulimit,
 * --sbom, --provenance, SOURCE_DATE_EPOCH, and local folders as named contexts. Each is
 * validated here; the agent maps it onto the engine, or refuses it (E_ENGINE_UNSUPPORTED) where
 * the engine has no equivalent. src= secrets and SSH sockets reach the sandbox as mounted files,
 * env= secrets through the agent's stdin (never a file): their values are never in an argv, an
 * environment, a log line or the image.
 */
import fs from 'node:fs';
import path from 'node:path';
import {csv, usage} from './option-values.js';
import {parseAnnotation} from '../../oci/annotations.js';

export interface Secret {
	readonly id: string;
	/** A host file holding the secret (mounted read-only). env= secrets have none: they go to the agent on its stdin. */
	readonly src?: string;
	readonly env?: string;
}

export interface SshSource {
	readonly id: string;
	/** A host socket (an ssh-agent) or key file. */
	readonly path: string;
}

export interface EngineOptions {
	readonly labels: ReadonlyArray<readonly [string, string]>;
	readonly annotations: ReadonlyArray<readonly [string, string]>;
	readonly noCacheFilter: readonly string[];
	readonly pull: boolean;
	readonly network: 'default' | 'none' | 'host';
	readonly addHosts: ReadonlyArray<readonly [string, string]>;
	readonly secrets: readonly Secret[];
	readonly ssh: readonly SshSource[];
	/** Bytes. */
	readonly shmSize: number | undefined;
	readonly ulimits: readonly string[];
	readonly sbom: string | undefined;
	readonly provenance: string | undefined;
	readonly sourceDateEpoch: number | undefined;
	/** --build-context NAME=DIR: a local folder as a named context. */
	readonly localContexts: ReadonlyArray<readonly [string, string]>;
}

export interface RawEngineOptions {
	label?: string[];
	annotation?: string[];
	/** commander names --no-cache-filter `cacheFilter` (its --no- prefix). */
	cacheFilter?: string[];
	pull?: boolean;
	network?: string;
	addHost?: string[];
	secret?: string[];
	ssh?: string[];
	shmSize?: string;
	ulimit?: string[];
	sbom?: string;
	provenance?: string;
}

const keyValue = (flag: string, value: string, separator = '='): [string, string] => {
	const at = value.indexOf(separator);
	if (at <= 0) {
		throw usage(`invalid ${flag} "${value}": expected KEY${separator}VALUE`, `e.g. ${flag} ${flag === '--add-host' ? 'db:10.0.0.5' : 'org.example.team=builds'}`);
	}

	return [value.slice(0, at), value.slice(at + 1)];
};

const idPattern = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export const parseSecret = (value: string, cwd: string, env: NodeJS.ProcessEnv): Secret => {
	const fields = value.includes('=') ? csv(value, '--secret', 'id=token,src=token.txt') : new Map([['id', value]]);
	const id = fields.get('id');
	if (id === undefined || !idPattern.test(id)) {
		throw usage(`--secret needs id=ID (letters, digits, . _ -), got "${value}"`, 'e.g. --secret id=token,src=token.txt or --secret id=token,env=TOKEN');
	}

	for (const key of fields.keys()) {
		if (!['id', 'src', 'source', 'env', 'type'].includes(key)) {
			throw usage(`--secret option "${key}" is not supported`, 'supported: id=, src= (or source=), env=, type=file|env');
		}
	}

	const src = fields.get('src') ?? fields.get('source');
	const type = fields.get('type') ?? (src === undefined && fields.has('env') ? 'env' : 'file');
	if (type === 'env' || (src === undefined && fields.has('env'))) {
		const name = fields.get('env') ?? id;
		if (env[name] === undefined) {
			throw usage(`--secret ${id}: environment variable ${name} is not set`, `export ${name}, or give the secret as a file: --secret id=${id},src=FILE`);
		}

		return {id, env: name};
	}

	const file = path.resolve(cwd, src ?? id);
	if (!fs.existsSync(file) || !fs.statSync(file).isFile()) {
		throw usage(`--secret ${id}: ${file} is not a file`, `give the file that holds the secret: --secret id=${id},src=FILE`);
	}

	return {id, src: file};
};

export const parseSsh = (value: string, cwd: string, env: NodeJS.ProcessEnv): SshSource => {
	const [id, given] = value.includes('=') ? keyValue('--ssh', value) : [value, undefined];
	if (!idPattern.test(id)) {
		throw usage(`invalid --ssh id "${id}"`, 'use --ssh default, or --ssh ID=PATH (an agent socket or a key file)');
	}

	const socket = given === undefined ? env['SSH_AUTH_SOCK'] : path.resolve(cwd, given);
	if (socket === undefined || socket === '') {
		throw usage(`--ssh ${id}: no path given and SSH_AUTH_SOCK is not set`, 'start an ssh-agent, or give --ssh ID=PATH to a key file or agent socket');
	}

	if (socket.includes(',')) {
		throw usage(`--ssh ${id}: a path with ',' cannot be passed on`, 'move or link it to a path without commas');
	}

	if (!fs.existsSync(socket)) {
		throw usage(`--ssh ${id}: ${socket} does not exist`, 'give an ssh-agent socket or a private key file');
	}

	return {id, path: socket};
};

const sizeUnits: Record<string, number> = {'': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3};

export const parseShmSize = (value: string): number => {
	const match = /^(\d+)([kmg]?b?)$/i.exec(value.trim());
	const unit = match === null ? undefined : sizeUnits[match[2]!.toLowerCase()];
	if (match === null || unit === undefined || Number(match[1]) === 0) {
		throw usage(`invalid --shm-size "${value}"`, 'a size such as 64m or 1g');
	}

	return Number(match[1]) * unit;
};

const ulimitNames = ['core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack'];

export const parseUlimit = (value: string): string => {
	const match = /^([a-z]+)=(-?\d+)(?::(-?\d+))?$/.exec(value);
	if (match === null || !ulimitNames.includes(match[1]!)) {
		throw usage(`invalid --ulimit "${value}"`, `TYPE=SOFT[:HARD] with TYPE one of ${ulimitNames.join(', ')}, e.g. --ulimit nofile=1024:2048`);
	}

	if (match[3] !== undefined && Number(match[3]) !== -1 && Number(match[2]) > Number(match[3])) {
		throw usage(`invalid --ulimit "${value}": the soft limit is above the hard one`, 'SOFT must be at most HARD');
	}

	return value;
};

/** SOURCE_DATE_EPOCH as buildx takes it: from the environment (or a build arg of that name). */
export const parseSourceDateEpoch = (value: string | undefined): number | undefined => {
	if (value === undefined || value === '') {
		return undefined;
	}

	if (!/^\d+$/.test(value)) {
		throw usage(`SOURCE_DATE_EPOCH="${value}" is not a number of seconds`, 'e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)');
	}

	return Number(value);
};

export const parseEngineOptions = (raw: RawEngineOptions, cwd: string, env: NodeJS.ProcessEnv, localContexts: ReadonlyArray<readonly [string, string]>): EngineOptions => {
	const network = raw.network ?? 'default';
	if (!['default', 'none', 'host'].includes(network)) {
		throw usage(`invalid --network "${network}"`, 'choose default, none or host (RUN steps share the sandbox\'s network with default and host)');
	}

	const addHosts = (raw.addHost ?? []).map(value => {
		const [host, ip] = keyValue('--add-host', value.replace('=', ':'), ':');
		if (!/^[a-zA-Z0-9.-]+$/.test(host) || !/^[\da-fA-F.:]+$/.test(ip)) {
			throw usage(`invalid --add-host "${value}"`, 'HOST:IP, e.g. --add-host db:10.0.0.5');
		}

		return [host, ip] as const;
	});
	const ids = new Set<string>();
	const secrets = (raw.secret ?? []).map(value => parseSecret(value, cwd, env));
	for (const secret of secrets) {
		if (ids.has(secret.id)) {
			throw usage(`--secret ${secret.id} is given twice`, 'give each secret id once');
		}

		ids.add(secret.id);
	}

	for (const [flag, value] of [['--sbom', raw.sbom], ['--provenance', raw.provenance]] as const) {
		if (value !== undefined && !/^(true|false|[a-z-]+=[^,]+(,[a-z-]+=[^,]+)*)$/.test(value)) {
			throw usage(`invalid ${flag} "${value}"`, `${flag}=true|false or key=value pairs, e.g. ${flag === '--sbom' ? '--sbom=true' : '--provenance=mode=max'}`);
		}
	}

	return {
		labels: (raw.label ?? []).map(value => keyValue('--label', value)),
		annotations: (raw.annotation ?? []).map(value => {
			const pair = keyValue('--annotation', value);
			parseAnnotation(...pair); // buildx's TYPE[PLATFORM]:KEY grammar, refused here (exit 2) when wrong.
			return pair;
		}),
		noCacheFilter: (raw.cacheFilter ?? []).flatMap(value => value.split(',')).map(stage => stage.trim()).filter(Boolean),
		pull: raw.pull === true,
		network: network as EngineOptions['network'],
		addHosts,
		secrets,
		ssh: (raw.ssh ?? []).map(value => parseSsh(value, cwd, env)),
		shmSize: raw.shmSize === undefined ? undefined : parseShmSize(raw.shmSize),
		ulimits: (raw.ulimit ?? []).map(parseUlimit),
		sbom: raw.sbom === 'false' ? undefined : raw.sbom,
		provenance: raw.provenance === 'false' ? undefined : raw.provenance,
		sourceDateEpoch: parseSourceDateEpoch(env['SOURCE_DATE_EPOCH']),
		localContexts,
	};
};
