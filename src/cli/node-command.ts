/**
 * `exobuild node add|ls|inspect|rm`: remote BuildKit nodes (docker buildx's nodes of a `remote`
 * builder) kept in `$XDG_CONFIG_HOME/exobuild/nodes.json` (src/nodes/store.ts). `add` without
 * --platform and `inspect` ask the node in a throwaway sandbox (src/nodes/probe.ts); `ls` and
 * `rm` only read and write the records.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import {Option, type Command} from 'commander';
import {interruptedBy, UserError} from '../errors.js';
import {parsePlatform, parsePlatforms} from '../platforms/parse.js';
import {parseNodeAddress, parseNodeName} from '../nodes/address.js';
import {probeNode, type NodeProbe, type NodeTarget} from '../nodes/probe.js';
import {findNode, nodesFile, readNodes, unknownNode, updateNodes, type NodeRecord, type NodeTls} from '../nodes/store.js';
import {collect} from './main.js';
import {watchStopSignals} from './stop-signals.js';

interface AddOptions {
	platform: string[];
	tlsCa?: string;
	tlsCert?: string;
	tlsKey?: string;
	tlsServerName?: string;
	sshKnownHosts?: string;
}

/**
 * Schemes whose connection helper runs a CLI the sandbox does not have (kubectl, docker, podman:
 * moby/buildkit v0.32.2 client/connhelper/{kubepod,dockercontainer,podmancontainer}) and whose
 * credentials live on the host: refused rather than stored as a node that can never answer.
 */
const unsupportedSchemes: ReadonlyMap<string, string> = new Map([
	['kube-pod', 'kubectl'], ['docker-container', 'docker'], ['podman-container', 'podman'],
]);

const refuseUnsupportedScheme = (scheme: string, address: string): void => {
	const cli = unsupportedSchemes.get(scheme);
	if (cli !== undefined) {
		throw new UserError(`${scheme}:// nodes are not supported: buildctl would run ${cli} inside exobuild's sandbox, which has neither ${cli} nor its credentials (${address})`, {
			hint: 'run buildkitd there listening on TCP with mTLS and add it as tcp://HOST:PORT --tls-ca … --tls-cert … --tls-key … (docs/scale-out.md), or reach its machine with ssh://USER@HOST',
		});
	}
};

/** An ssh:// node's known_hosts: --ssh-known-hosts, else ~/.ssh/known_hosts; a regular file, as an absolute path. */
const sshKnownHostsOf = async (scheme: string, options: AddOptions): Promise<string | undefined> => {
	if (scheme !== 'ssh') {
		if (options.sshKnownHosts !== undefined) {
			throw new UserError(`--ssh-known-hosts goes with an ssh:// address, not ${scheme}://`, {hint: 'drop --ssh-known-hosts'});
		}

		return undefined;
	}

	const file = path.resolve(options.sshKnownHosts ?? path.join(os.homedir(), '.ssh', 'known_hosts'));
	const stat = await fs.stat(file).catch(() => undefined);
	if (stat === undefined || !stat.isFile()) {
		throw new UserError(`${options.sshKnownHosts === undefined ? 'the known_hosts file' : '--ssh-known-hosts'} ${file} ${stat === undefined ? 'does not exist' : 'is not a regular file'}: ssh checks the node's host key against it`, {
			hint: 'connect once with `ssh -p PORT USER@HOST true` and check the fingerprint it shows (that adds the key to ~/.ssh/known_hosts), or give --ssh-known-hosts FILE',
		});
	}

	return file;
};

/** A TLS file the user named: a readable regular file (a link to one is the user's own choice), as an absolute path. */
const tlsFile = async (flag: string, file: string): Promise<string> => {
	const absolute = path.resolve(file);
	const stat = await fs.stat(absolute).catch((error: NodeJS.ErrnoException) => {
		throw new UserError(`${flag} ${file}: ${error.code === 'ENOENT' ? 'no such file' : error.message}`, {hint: `give the PEM file of ${flag}`, cause: error});
	});
	if (!stat.isFile()) {
		throw new UserError(`${flag} ${file} is not a regular file`, {hint: `give the PEM file of ${flag}`});
	}

	await fs.access(absolute, fs.constants.R_OK).catch((error: unknown) => {
		throw new UserError(`${flag} ${file} is not readable`, {hint: 'fix its permissions (exobuild reads it to connect)', cause: error});
	});
	return absolute;
};

/** The TLS options: the three files together, with a tcp:// address only (mTLS is the only way exobuild talks TCP to a node). */
const tlsOf = async (scheme: string, options: AddOptions): Promise<NodeTls | undefined> => {
	const given = [options.tlsCa, options.tlsCert, options.tlsKey].filter(value => value !== undefined).length;
	if (scheme !== 'tcp') {
		if (given > 0 || options.tlsServerName !== undefined) {
			throw new UserError(`--tls-* options go with a tcp:// address, not ${scheme}://`, {hint: `${scheme}:// brings its own transport; drop the --tls-* options`});
		}

		return undefined;
	}

	if (given !== 3) {
		throw new UserError(given === 0 ? 'a tcp:// node needs mTLS: --tls-ca, --tls-cert and --tls-key' : '--tls-ca, --tls-cert and --tls-key go together', {
			hint: 'give the CA that signed buildkitd\'s certificate and a client certificate and key it accepts (docs/scale-out.md says how to make them); buildkitd on TCP without TLS runs anyone\'s builds',
		});
	}

	if (options.tlsServerName !== undefined && !/^[A-Za-z0-9.:[\]-]{1,253}$/.test(options.tlsServerName)) {
		throw new UserError(`invalid --tls-server-name "${options.tlsServerName}"`, {hint: 'give the host name in the node\'s certificate'});
	}

	return {
		ca: await tlsFile('--tls-ca', options.tlsCa!),
		cert: await tlsFile('--tls-cert', options.tlsCert!),
		key: await tlsFile('--tls-key', options.tlsKey!),
		...(options.tlsServerName === undefined ? {} : {serverName: options.tlsServerName}),
	};
};

const existing = (name: string): UserError => new UserError(`a node named "${name}" exists already`, {
	hint: `remove it first with \`exobuild node rm ${name}\` (or choose another name)`,
});

/** Runs a probe with Ctrl-C handling: an interrupted probe ends the command with the signal's exit code. */
const probeWithSignals = async (node: NodeTarget, what: string): Promise<NodeProbe> => {
	const stop = watchStopSignals(what);
	try {
		const probe = await probeNode(node, {signal: stop.signal});
		const caught = stop.caught();
		if (caught !== undefined) {
			throw interruptedBy(caught, what);
		}

		return probe;
	} catch (error) {
		const caught = stop.caught();
		throw caught === undefined ? error : interruptedBy(caught, what, error);
	} finally {
		stop.end();
	}
};

const notAnswering = (node: NodeTarget, reason: string): UserError => new UserError(`node ${node.name} (${node.address}) does not answer: ${reason}`, {
	code: 'E_NODE_DOWN',
	...(node.address.startsWith('ssh://') ? {hint: `check that \`ssh ${node.address.replace(/^(ssh:\/\/[^/]+).*$/, '$1')} buildctl debug workers\` works from this shell: the host key must be in ${node.sshKnownHosts ?? 'the known_hosts file'}, the ssh-agent must hold a key the node accepts, and buildctl must be on the node's PATH`} : {}),
});

const platformsLine = (node: NodeRecord): string => `${node.platforms.join(', ')} (${node.platformsFrom === 'node' ? 'reported by the node when it was added' : 'given with --platform'})`;

const inspectText = (node: NodeRecord, probe: NodeProbe): string => [
	`Name:       ${node.name}`,
	`Address:    ${node.address}`,
	...(node.sshKnownHosts === undefined ? [] : [`SSH:        known_hosts ${node.sshKnownHosts}, keys from the ssh-agent at SSH_AUTH_SOCK`]),
	...(node.tls === undefined ? [] : [`TLS:        ca ${node.tls.ca}, cert ${node.tls.cert}, key ${node.tls.key}${node.tls.serverName === undefined ? '' : `, server name ${node.tls.serverName}`}`]),
	`Platforms:  ${platformsLine(node)}`,
	`Added:      ${node.added}`,
	...(probe.answered
		? ['Status:     answered', `BuildKit:   ${probe.version}`, `Native:     ${probe.nativePlatforms.join(', ') || '(none)'}`, `Workers:    ${probe.workerPlatforms.join(', ') || '(none)'} (its own first, then what else its machine runs: other native ones and emulators)`]
		: [`Status:     not answering: ${probe.reason}`]),
].join('\n');

export const registerNodeCommand = (program: Command): void => {
	const node = program.command('node').description('Manage remote BuildKit nodes (machines that build their platforms natively)');

	node
		.command('add')
		.description('Add a remote BuildKit node; without --platform, its platforms are the native ones its workers report')
		.argument('<NAME>', 'a name: a letter, then letters, digits, . _ -')
		.argument('<ADDR>', 'a buildctl address: tcp://HOST:PORT (mTLS), unix:///PATH, ssh://[USER@]HOST[:PORT][/SOCKET] (through your ssh-agent)')
		.addOption(new Option('--platform <P>', 'platform(s) the node builds, comma list, repeatable').argParser(collect).default([], 'the native platform of each of its workers, asked from the node'))
		.option('--tls-ca <FILE>', 'CA certificate that signed the node\'s certificate (tcp://)')
		.option('--tls-cert <FILE>', 'client certificate (tcp://)')
		.option('--tls-key <FILE>', 'client key (tcp://)')
		.option('--tls-server-name <NAME>', 'server name to check the node\'s certificate against (default: the address\'s host)')
		.option('--ssh-known-hosts <FILE>', 'known_hosts file holding the node\'s host key (ssh://; default: ~/.ssh/known_hosts)')
		.action(async (nameArgument: string, addressArgument: string, options: AddOptions) => {
			const name = parseNodeName(nameArgument);
			const address = parseNodeAddress(addressArgument);
			refuseUnsupportedScheme(address.scheme, address.address);
			const tls = await tlsOf(address.scheme, options);
			const sshKnownHosts = await sshKnownHostsOf(address.scheme, options);
			const target: NodeTarget = {name, address: address.address, tls, sshKnownHosts};
			if (findNode(await readNodes(), name) !== undefined) {
				throw existing(name);
			}

			let platforms: string[];
			let platformsFrom: NodeRecord['platformsFrom'];
			if (options.platform.length > 0) {
				platforms = [...new Set(parsePlatforms(options.platform).map(platform => platform.id))];
				platformsFrom = 'flag';
			} else {
				if (process.stderr.isTTY) {
					process.stderr.write(`exobuild: asking ${name} (${address.address}) for its platforms\n`);
				}

				const probe = await probeWithSignals(target, 'node add');
				if (!probe.answered) {
					throw notAnswering(target, probe.reason);
				}

				platforms = probe.nativePlatforms.flatMap(id => {
					try {
						return [parsePlatform(id).id];
					} catch {
						return [];
					}
				});
				platformsFrom = 'node';
				if (platforms.length === 0) {
					throw new UserError(`node ${name} (${address.address}) reports no native platform exobuild knows (${probe.nativePlatforms.join(', ') || 'none'})`, {
						hint: 'give its platforms with --platform', code: 'E_PLATFORM',
					});
				}
			}

			const record: NodeRecord = {name, address: address.address, platforms, platformsFrom, ...(tls === undefined ? {} : {tls}), ...(sshKnownHosts === undefined ? {} : {sshKnownHosts}), added: new Date().toISOString()};
			await updateNodes(document => {
				if (findNode(document, name) !== undefined) {
					throw existing(name);
				}

				return {document: {...document, nodes: [...document.nodes, record]}, value: undefined};
			});
			process.stdout.write(`added node ${name} (${address.address}): ${platformsLine(record)}\n`);
		});

	node
		.command('ls')
		.description('List the nodes (from the records; `node inspect` asks a node)')
		.option('--json', 'print the records as JSON')
		.action(async (options: {json?: boolean}) => {
			const {nodes} = await readNodes();
			if (options.json) {
				process.stdout.write(`${JSON.stringify(nodes, undefined, 2)}\n`);
				return;
			}

			process.stdout.write(`${['NAME', 'ADDRESS', 'PLATFORMS', 'FROM', 'TLS'].join('\t')}\n`);
			for (const record of nodes) {
				process.stdout.write(`${[record.name, record.address, record.platforms.join(','), record.platformsFrom, record.tls === undefined ? '-' : 'mtls'].join('\t')}\n`);
			}
		});

	node
		.command('inspect')
		.description('Show a node and ask it: whether it answers, its BuildKit version, its workers\' platforms')
		.argument('<NAME>', 'the node')
		.option('--json', 'print {node record…, status: {answered, version, nativePlatforms, workerPlatforms | reason}}')
		.action(async (name: string, options: {json?: boolean}) => {
			const document = await readNodes();
			const record = findNode(document, name);
			if (record === undefined) {
				throw unknownNode(name, document);
			}

			const probe = await probeWithSignals(record, 'node inspect');
			process.stdout.write(options.json ? `${JSON.stringify({...record, status: probe}, undefined, 2)}\n` : `${inspectText(record, probe)}\n`);
		});

	node
		.command('rm')
		.description('Remove a node')
		.argument('<NAME>', 'the node')
		.action(async (name: string) => {
			const removed = await updateNodes(document => {
				const record = findNode(document, name);
				if (record === undefined) {
					throw unknownNode(name, document);
				}

				return {document: {...document, nodes: document.nodes.filter(candidate => candidate !== record)}, value: record};
			});
			process.stdout.write(`removed node ${removed.name} (${removed.address}) from ${nodesFile()}\n`);
		});
};
