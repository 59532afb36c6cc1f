/**
 * The grammar of a node's address: the schemes `buildctl --addr` connects to (moby/buildkit
 * v0.32.2: client/client.go resolves tcp:// and unix:// itself, and the connection helpers of
 * client/connhelper/{ssh,kubepod,dockercontainer,podmancontainer} serve the others). Anything else
 * is refused with a hint before a node is stored. Pure: no I/O.
 */
import {UserError} from '../errors.js';

export const nodeSchemes = ['tcp', 'unix', 'ssh', 'kube-pod', 'docker-container', 'podman-container'] as const;
export type NodeScheme = (typeof nodeSchemes)[number];

export interface NodeAddress {
	readonly scheme: NodeScheme;
	/** The address as buildctl takes it (normalised: no trailing slash, lower-case scheme). */
	readonly address: string;
}

const addressHint = 'give tcp://HOST:PORT (with --tls-ca, --tls-cert and --tls-key), unix:///PATH, ssh://[USER@]HOST[:PORT][/SOCKET], kube-pod://POD[?namespace=NS&context=CTX&container=C], docker-container://NAME or podman-container://NAME';

const refuse = (address: string, why: string): UserError => new UserError(`invalid node address "${address}": ${why}`, {hint: addressHint});

/** A host name, an IPv4 address, or an IPv6 address in brackets. */
const hostPattern = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])$/;
/** Container and pod names (docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, Kubernetes' DNS labels are a subset). */
const containerPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/;
const userPattern = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const kubeQueryKeys = new Set(['namespace', 'context', 'container']);

const port = (address: string, text: string): string => {
	const value = Number(text);
	if (!/^\d{1,5}$/.test(text) || value < 1 || value > 65_535) {
		throw refuse(address, `port ${JSON.stringify(text)} is not a number from 1 to 65535`);
	}

	return String(value);
};

/** Splits HOST[:PORT] (HOST may be [IPv6]). */
const hostAndPort = (address: string, text: string): {host: string; port?: string} => {
	const match = /^(\[[^\]]*\]|[^:]*)(?::([^:]*))?$/.exec(text);
	if (match === null || !hostPattern.test(match[1]!)) {
		throw refuse(address, `${JSON.stringify(text)} is not HOST[:PORT]`);
	}

	return match[2] === undefined ? {host: match[1]!} : {host: match[1]!, port: port(address, match[2])};
};

/** Parses and normalises ADDR of `exobuild node add NAME ADDR`; throws a UserError (exit 2) naming what is wrong. */
export const parseNodeAddress = (input: string): NodeAddress => {
	const address = input.trim();
	if (address === '' || /[\s\0]/.test(address)) {
		throw refuse(input, 'it is empty or holds white space');
	}

	const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/.exec(address);
	if (match === null) {
		throw refuse(address, 'it has no scheme (SCHEME://…)');
	}

	const scheme = match[1]!.toLowerCase();
	const rest = match[2]!;
	switch (scheme) {
		case 'tcp': {
			const {host, port: portText} = hostAndPort(address, rest.replace(/\/$/, ''));
			if (portText === undefined) {
				throw refuse(address, 'a tcp:// address needs a port (buildkitd has no default TCP port)');
			}

			return {scheme, address: `tcp://${host}:${portText}`};
		}

		case 'unix': {
			if (!rest.startsWith('/') || rest.length < 2 || rest.split('/').includes('..')) {
				throw refuse(address, 'a unix:// address names an absolute socket path (unix:///run/buildkit/buildkitd.sock)');
			}

			return {scheme, address: `unix://${rest}`};
		}

		case 'ssh': {
			// client/connhelper/ssh/ssh.go (SpecFromURL): [USER@]HOST[:PORT][/SOCKET], no password,
			// query or fragment; it runs `ssh [-l USER] [-p PORT] -- HOST buildctl [--addr unix://SOCKET] dial-stdio`.
			const slash = rest.indexOf('/');
			const authority = slash === -1 ? rest : rest.slice(0, slash);
			const socket = slash === -1 ? '' : rest.slice(slash).replace(/^\/$/, '');
			const at = authority.lastIndexOf('@');
			const user = at === -1 ? undefined : authority.slice(0, at);
			if (user !== undefined && !userPattern.test(user)) {
				throw refuse(address, `${JSON.stringify(user)} is not a user name (a password is not supported)`);
			}

			if (/[?#]/.test(rest) || (socket !== '' && (socket.split('/').includes('..') || !/^[A-Za-z0-9_./-]+$/.test(socket)))) {
				throw refuse(address, 'an ssh:// address is [USER@]HOST[:PORT][/SOCKET-PATH], with no query or fragment');
			}

			const {host, port: portText} = hostAndPort(address, authority.slice(at + 1));
			return {scheme, address: `ssh://${user === undefined ? '' : `${user}@`}${host}${portText === undefined ? '' : `:${portText}`}${socket}`};
		}

		case 'kube-pod': {
			// client/connhelper/kubepod/kubepod.go: kube-pod://POD?context=CTX&namespace=NS&container=C.
			const [pod = '', query] = rest.split('?', 2) as [string, string | undefined];
			if (!containerPattern.test(pod.replace(/\/$/, ''))) {
				throw refuse(address, `${JSON.stringify(pod)} is not a pod name`);
			}

			const parameters = new URLSearchParams(query ?? '');
			for (const [key, value] of parameters) {
				if (!kubeQueryKeys.has(key) || !containerPattern.test(value)) {
					throw refuse(address, `kube-pod:// takes only namespace=, context= and container= (names), not ${JSON.stringify(`${key}=${value}`)}`);
				}
			}

			const normalised = parameters.toString();
			return {scheme, address: `kube-pod://${pod.replace(/\/$/, '')}${normalised === '' ? '' : `?${normalised}`}`};
		}

		case 'docker-container':
		case 'podman-container': {
			const name = rest.replace(/\/$/, '');
			if (!containerPattern.test(name)) {
				throw refuse(address, `${JSON.stringify(rest)} is not a container name`);
			}

			return {scheme, address: `${scheme}://${name}`};
		}

		default: {
			throw refuse(address, `buildctl does not connect to ${scheme}:// addresses`);
		}
	}
};

/** buildx's node and builder names (docker/buildx store/util.go, namePattern), at most 63 characters; lower-cased as buildx does. */
const namePattern = /^[a-zA-Z][a-zA-Z0-9._-]{0,62}$/;

export const parseNodeName = (name: string): string => {
	if (!namePattern.test(name)) {
		throw new UserError(`invalid node name "${name}": a name starts with a letter and holds only letters, digits and . _ - (at most 63)`, {hint: 'choose a name like z15 or power9-lab'});
	}

	return name.toLowerCase();
};
