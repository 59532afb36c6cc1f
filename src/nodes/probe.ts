/**
 * Asking a BuildKit node about itself: `buildctl debug workers` (its platforms) and `buildctl
 * debug info` (its version), run by the agent's `query` command in a throwaway sandbox of the
 * current driver from the builder image (which has buildctl: the host needs nothing new), with the
 * node's TLS files mounted read-only. The linux-userns sandbox shares the host's network
 * namespace, so loopback addresses reach the host's. Flags: moby/buildkit v0.32.2
 * cmd/buildctl/main.go (--addr, --tlscacert, --tlscert, --tlskey, --tlsservername, --timeout) and
 * cmd/buildctl/debug/{workers,info}.go (--format with a Go template: `{{json .}}`).
 */
import fs from 'node:fs/promises';
import process from 'node:process';
import {z} from 'zod';
import {runAgent} from '../agent/run-agent.js';
import type {AgentEvent, AgentEventOf} from '../agent/contract.js';
import {builderEngines, findBuilderImage, type BuilderImage} from '../builder-image/index.js';
import {UserError} from '../errors.js';
import {newSessionId} from '../pipeline/run-build.js';
import {parsePlatform} from '../platforms/parse.js';
import {createDriver, defaultDriver} from '../sandboxes/index.js';
import type {Mount, SandboxDriver} from '../sandboxes/driver.js';
import type {NodeTls} from './store.js';

/** Where the node's TLS files are inside the sandbox. */
const sandboxTls = {ca: '/exobuild/node-tls/ca.pem', cert: '/exobuild/node-tls/cert.pem', key: '/exobuild/node-tls/key.pem'} as const;

/**
 * Where an ssh:// node's known_hosts and the host's ssh-agent socket are inside the sandbox: the
 * paths vm-image/node-ssh.conf (the builder image's /etc/ssh/ssh_config.d/exobuild-node.conf)
 * gives ssh as UserKnownHostsFile and IdentityAgent. buildctl's connection helper runs `ssh [-l
 * USER] [-p PORT] -- HOST buildctl [--addr unix://SOCKET] dial-stdio` (moby/buildkit v0.32.2
 * client/connhelper/ssh/ssh.go); ssh signs with the agent, so no key is ever in the sandbox.
 */
export const sandboxSsh = {knownHosts: '/exobuild/node-ssh/known_hosts', agent: '/exobuild/node-ssh/agent.sock'} as const;

const sshAgentHint = 'start an ssh-agent holding a key the node accepts (eval "$(ssh-agent)"; ssh-add KEY) and run exobuild from that shell (SSH_AUTH_SOCK); exobuild forwards the agent, never a key';

/** Seconds buildctl waits for the connection (its --timeout), and the agent for each command. */
export const nodeConnectSeconds = 5;
export const nodeQuerySeconds = 15;

export interface NodeTarget {
	readonly name: string;
	readonly address: string;
	readonly tls?: NodeTls | undefined;
	/** ssh:// nodes: the known_hosts file that holds the node's host key. */
	readonly sshKnownHosts?: string | undefined;
}

const isSsh = (node: NodeTarget): boolean => node.address.startsWith('ssh://');

/** The host's ssh-agent socket (SSH_AUTH_SOCK), which an ssh:// node needs; throws a UserError (exit 2) naming what is missing. */
export const sshAgentSocket = (node: NodeTarget, env: NodeJS.ProcessEnv): string => {
	const socket = env['SSH_AUTH_SOCK'];
	if (socket === undefined || socket === '' || !socket.startsWith('/')) {
		throw new UserError(`node ${node.name} (${node.address}) is reached over ssh, but SSH_AUTH_SOCK is ${socket === undefined || socket === '' ? 'not set' : `not an absolute path (${socket})`}`, {hint: sshAgentHint});
	}

	return socket;
};

/** Checks before any sandbox that an ssh:// node's agent socket is a live socket and its known_hosts a file. */
export const checkSshNode = async (node: NodeTarget, env: NodeJS.ProcessEnv): Promise<void> => {
	if (!isSsh(node)) {
		return;
	}

	const socket = sshAgentSocket(node, env);
	const stat = await fs.stat(socket).catch(() => undefined);
	if (stat === undefined || !stat.isSocket()) {
		throw new UserError(`node ${node.name} (${node.address}) is reached over ssh, but SSH_AUTH_SOCK (${socket}) is ${stat === undefined ? 'gone' : 'not a socket'}: no ssh-agent runs`, {hint: sshAgentHint});
	}

	const knownHosts = await fs.stat(node.sshKnownHosts ?? '').catch(() => undefined);
	if (node.sshKnownHosts === undefined || knownHosts === undefined || !knownHosts.isFile()) {
		throw new UserError(`node ${node.name} (${node.address}): its known_hosts file ${node.sshKnownHosts ?? '(none recorded)'} is ${knownHosts === undefined ? 'gone' : 'not a regular file'}`, {
			hint: `add the node again with --ssh-known-hosts FILE (a file holding the node's host key; \`ssh -p PORT USER@HOST true\` once adds it to ~/.ssh/known_hosts)`,
		});
	}
};

export type NodeProbe =
	| {readonly answered: true; readonly version: string; readonly nativePlatforms: readonly string[]; readonly workerPlatforms: readonly string[]}
	| {readonly answered: false; readonly reason: string};

/** The argv of buildctl against `node`, before its subcommand. */
export const buildctlArgv = (node: NodeTarget): string[] => [
	'buildctl', '--addr', node.address, '--timeout', String(nodeConnectSeconds),
	...(node.tls === undefined ? [] : ['--tlscacert', sandboxTls.ca, '--tlscert', sandboxTls.cert, '--tlskey', sandboxTls.key]),
	...(node.tls?.serverName === undefined ? [] : ['--tlsservername', node.tls.serverName]),
];

/** What the node's sandbox mounts: the TLS files of a tcp:// node; the known_hosts file and the host's ssh-agent socket for an ssh:// node. */
export const probeMounts = (node: NodeTarget, env: NodeJS.ProcessEnv = process.env): Mount[] => [
	...(node.tls === undefined ? [] : [
		{hostPath: node.tls.ca, sandboxPath: sandboxTls.ca, readOnly: true},
		{hostPath: node.tls.cert, sandboxPath: sandboxTls.cert, readOnly: true},
		{hostPath: node.tls.key, sandboxPath: sandboxTls.key, readOnly: true},
	]),
	...(isSsh(node) && node.sshKnownHosts !== undefined ? [
		{hostPath: node.sshKnownHosts, sandboxPath: sandboxSsh.knownHosts, readOnly: true},
		{hostPath: sshAgentSocket(node, env), sandboxPath: sandboxSsh.agent, readOnly: true},
	] : []),
];

/** `exobuild-agent query …` for the two questions. */
export const probeAgentArgs = (node: NodeTarget): string[] => {
	const base = buildctlArgv(node);
	const workers = [...base, 'debug', 'workers', '--format', '{{json .}}'];
	const info = [...base, 'debug', 'info', '--format', '{{json .}}'];
	return ['query', '--timeout', String(nodeQuerySeconds), String(workers.length), ...workers, String(info.length), ...info];
};

// client.WorkerInfo and client.Info of moby/buildkit v0.32.2 (client/workers.go, client/info.go)
// as buildctl's `{{json .}}` prints them (lower-case keys, checked against that buildctl); only the
// fields read here are checked.
const workersJson = z.array(z.object({
	platforms: z.array(z.object({os: z.string(), architecture: z.string(), variant: z.string().optional()}).passthrough()).nullable().optional(),
}).passthrough()).max(64);
const infoJson = z.object({buildkitVersion: z.object({version: z.string().max(200)}).passthrough()}).passthrough();

/**
 * ssh's own words when buildctl's connection helper failed: buildctl quotes the command and its
 * stderr (`command [ssh …] has exited with exit status 255, … stderr=LINES"`, docker/cli
 * connhelper/commandconn, vendored by moby/buildkit v0.32.2), where ssh's last lines say why
 * (`Host key verification failed.`, `Permission denied (publickey).`); its banner of @ is dropped.
 */
export const sshCause = (line: string): string | undefined => {
	const match = /command \[(ssh [^\]]*)\] has exited with exit status (\d+).*?stderr=(.*?)"?$/.exec(line);
	if (match === null) {
		return undefined;
	}

	const said = match[3]!.split(/\\r\\n|\\n|\r?\n/).map(text => text.trim()).filter(text => text !== '' && !/^@+$/.test(text) && !/^@.*@$/.test(text));
	return `${match[1]!} exited with ${match[2]!}: ${said.slice(-2).join(' ') || 'no message'}`.slice(0, 500);
};

/** The last line of a command's output, as the cause of a failure (buildctl's `error: …`; for ssh, ssh's own last words). */
const lastLine = (output: string): string => {
	const line = output.trim().split('\n').map(text => text.trim()).filter(Boolean).at(-1);
	return line === undefined ? 'no output' : (sshCause(line) ?? line.slice(0, 500));
};

const platformIdOf = (platform: {os: string; architecture: string; variant?: string | undefined}): string => {
	const spelled = `${platform.os}/${platform.architecture}${platform.variant ? `/${platform.variant}` : ''}`;
	try {
		return parsePlatform(spelled).id;
	} catch {
		return spelled;
	}
};

/**
 * What the workers report: every platform (canonical where the platform table knows it, else
 * os/arch[/variant] as the node said), in the node's order without repeats; and the native
 * ones: the first platform of each worker. BuildKit lists a worker's configured platforms (its
 * machine's, or --oci-worker-platform) first and appends what it found it can emulate
 * (worker/base/worker.go, Worker.Platforms, moby/buildkit v0.32.2); a node is for what it builds
 * natively, the local sandbox emulates the rest.
 */
export const workerPlatforms = (output: string): {all: string[]; native: string[]} => {
	const workers = workersJson.parse(JSON.parse(output));
	const all = workers.flatMap(worker => worker.platforms ?? []).map(platform => platformIdOf(platform));
	const native = workers.flatMap(worker => worker.platforms?.slice(0, 1) ?? []).map(platform => platformIdOf(platform));
	return {all: [...new Set(all)], native: [...new Set(native)]};
};

/** What the two query events say. Pure. */
export const readProbe = (workers: AgentEventOf<'query'> | undefined, info: AgentEventOf<'query'> | undefined): NodeProbe => {
	for (const query of [workers, info]) {
		if (query === undefined) {
			return {answered: false, reason: 'the agent ended before it asked'};
		}

		if (query.exitCode === 124 || query.exitCode === 137) {
			return {answered: false, reason: `no answer within ${nodeQuerySeconds} s`};
		}

		if (query.exitCode !== 0) {
			return {answered: false, reason: lastLine(query.output)};
		}
	}

	try {
		const platforms = workerPlatforms(workers!.output);
		const version = infoJson.parse(JSON.parse(info!.output)).buildkitVersion.version;
		return {answered: true, version, nativePlatforms: platforms.native, workerPlatforms: platforms.all};
	} catch (error) {
		return {answered: false, reason: `its answer is not what buildctl prints (${error instanceof z.ZodError ? error.issues.map(issue => `${issue.path.join('.')}: ${issue.message}`).join('; ') : (error instanceof Error ? error.message : String(error))})`.slice(0, 500)};
	}
};

/**
 * Asks `node` in a throwaway sandbox; the sandbox is gone when this returns (also on abort).
 * Throws a UserError when the probe cannot run at all (no builder image with BuildKit).
 */
export const probeNode = async (node: NodeTarget, options: {
	readonly signal?: AbortSignal | undefined;
	/** The sandbox driver and builder image to ask from (default: this machine's driver, the current builder image). */
	readonly driver?: SandboxDriver;
	readonly builder?: BuilderImage;
	/** Where SSH_AUTH_SOCK is read (default: process.env). */
	readonly env?: NodeJS.ProcessEnv;
} = {}): Promise<NodeProbe> => {
	const env = options.env ?? process.env;
	await checkSshNode(node, env);
	// The TLS files are mounted: one that is gone (or is no longer a file) would fail the sandbox's start.
	for (const [what, file] of Object.entries(node.tls === undefined ? {} : {'CA certificate': node.tls.ca, 'client certificate': node.tls.cert, 'client key': node.tls.key})) {
		const stat = await fs.stat(file).catch(() => undefined);
		if (stat === undefined || !stat.isFile()) {
			return {answered: false, reason: `its ${what} ${file} is ${stat === undefined ? 'gone' : 'not a regular file'} (add the node again with the right files)`};
		}
	}

	const builder = options.builder ?? await findBuilderImage();
	if (builder === undefined || !builderEngines(builder).includes('buildkit')) {
		throw new UserError(`cannot ask node ${node.name} (${node.address}): ${builder === undefined ? 'there is no current builder image' : `the builder image ${builder.reference} has no buildctl`}`, {
			hint: 'make one with BuildKit (`exobuild builder build`), or give the node\'s platforms with --platform',
			code: 'E_BUILDER_IMAGE',
		});
	}

	const driver = options.driver ?? createDriver(defaultDriver());
	await driver.features();
	const sandbox = await driver.start({sessionId: newSessionId(), builderImage: builder, mounts: probeMounts(node, env), ...(options.signal === undefined ? {} : {signal: options.signal})});
	const events: AgentEvent[] = [];
	let stderr = '';
	try {
		const outcome = await runAgent(sandbox, {
			args: probeAgentArgs(node),
			mode: 'prove',
			onEvent: event => events.push(event),
			onStderrLine(line) {
				stderr = line;
			},
			...(options.signal === undefined ? {} : {signal: options.signal}),
		});
		if (outcome.kind === 'failed') {
			throw new UserError(`cannot ask node ${node.name}: ${outcome.error.code}: ${outcome.error.message}`, {code: outcome.error.code});
		}

		if (outcome.kind === 'protocol-error' || (outcome.kind === 'crashed' && events.length === 0)) {
			throw new UserError(`cannot ask node ${node.name}: the agent in the sandbox ${outcome.kind === 'protocol-error' ? outcome.error.message : `ended (exit ${outcome.exitCode ?? '-'}): ${stderr}`}`, {
				hint: 'the builder image may be older than this exobuild: exobuild builder build --force', code: 'E_PROTOCOL',
			});
		}
	} finally {
		await sandbox.stop();
	}

	const queries = events.filter((event): event is AgentEventOf<'query'> => event.event === 'query');
	return readProbe(queries.find(query => query.index === 0), queries.find(query => query.index === 1));
};
