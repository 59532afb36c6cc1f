/**
 * The node records of `exobuild node …`: `$XDG_CONFIG_HOME/exobuild/nodes.json` (default
 * ~/.config/exobuild/nodes.json), one JSON document validated with zod on every read and before
 * every write. The folder is 0700 and the file 0600 (it names key files). A write goes to a temp
 * file in the same folder (O_EXCL|O_NOFOLLOW, fsync) renamed over the old one, so a reader sees the
 * old records or the new, never half; concurrent writers take a lock (src/runs/lock.ts) around
 * read-modify-write. Nothing is ever read or written through a symlink: a nodes.json (or an
 * exobuild folder) that is a link or not a regular file is refused with one line and a hint.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {z} from 'zod';
import {UserError} from '../errors.js';
import {replaceFile} from '../fs/replace-file.js';
import {withLock} from '../runs/lock.js';
import {parsePlatform} from '../platforms/parse.js';
import {parseNodeAddress, parseNodeName} from './address.js';

/** exobuild's config folder: $XDG_CONFIG_HOME/exobuild, else ~/.config/exobuild. */
export const configDir = (env: NodeJS.ProcessEnv = process.env): string => {
	const xdg = env['XDG_CONFIG_HOME'];
	return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.config'), 'exobuild');
};

export const nodesFile = (env?: NodeJS.ProcessEnv): string => path.join(configDir(env), 'nodes.json');

/** nodes.json is small; a bigger file is not one exobuild wrote. */
const maxNodesFileBytes = 1024 * 1024;

const absolutePath = z.string().min(1).max(4096).refine(value => path.isAbsolute(value) && !value.includes('\0'), 'must be an absolute path');
const canonicalPlatform = z.string().refine(value => {
	try {
		return parsePlatform(value).id === value;
	} catch {
		return false;
	}
}, 'must be a supported platform in its canonical spelling (linux/s390x)');

export const nodeTlsSchema = z.object({
	ca: absolutePath,
	cert: absolutePath,
	key: absolutePath,
	serverName: z.string().regex(/^[A-Za-z0-9.:[\]-]{1,253}$/).optional(),
}).strict();
export type NodeTls = z.infer<typeof nodeTlsSchema>;

export const nodeRecordSchema = z.object({
	name: z.string().refine(value => {
		try {
			return parseNodeName(value) === value;
		} catch {
			return false;
		}
	}, 'must be a node name (a letter, then letters, digits, . _ -; lower case)'),
	address: z.string().refine(value => {
		try {
			return parseNodeAddress(value).address === value;
		} catch {
			return false;
		}
	}, 'must be a normalised buildctl address'),
	platforms: z.array(canonicalPlatform).min(1),
	/** flag: given with --platform; node: what its workers reported when it was added. */
	platformsFrom: z.enum(['flag', 'node']),
	tls: nodeTlsSchema.optional(),
	/** ssh:// nodes: the known_hosts file ssh checks the node's host key against (mounted read-only). */
	sshKnownHosts: absolutePath.optional(),
	added: z.string().datetime(),
}).strict().superRefine((node, context) => {
	if (node.tls !== undefined && !node.address.startsWith('tcp://')) {
		context.addIssue({code: z.ZodIssueCode.custom, message: 'TLS files go with a tcp:// address only', path: ['tls']});
	}

	if (node.sshKnownHosts !== undefined && !node.address.startsWith('ssh://')) {
		context.addIssue({code: z.ZodIssueCode.custom, message: 'a known_hosts file goes with an ssh:// address only', path: ['sshKnownHosts']});
	}

	if (node.tls === undefined && node.address.startsWith('tcp://')) {
		context.addIssue({code: z.ZodIssueCode.custom, message: 'a tcp:// node needs its mTLS files', path: ['tls']});
	}
});
export type NodeRecord = z.infer<typeof nodeRecordSchema>;

export const nodesDocumentSchema = z.object({
	version: z.literal(1),
	nodes: z.array(nodeRecordSchema),
}).strict().superRefine((document, context) => {
	const seen = new Set<string>();
	for (const [index, node] of document.nodes.entries()) {
		if (seen.has(node.name)) {
			context.addIssue({code: z.ZodIssueCode.custom, message: `node name ${node.name} appears twice`, path: ['nodes', index, 'name']});
		}

		seen.add(node.name);
	}
});
export type NodesDocument = z.infer<typeof nodesDocumentSchema>;

const emptyDocument: NodesDocument = {version: 1, nodes: []};

const refuseFile = (file: string, why: string, cause?: unknown): UserError => new UserError(`${file} ${why}`, {
	hint: `exobuild keeps its node records there; move that file away (then add the nodes again with \`exobuild node add\`), or point XDG_CONFIG_HOME elsewhere`,
	...(cause === undefined ? {} : {cause}),
});

/** The config folder, which must be a real folder (not a link) if it exists. */
const checkFolder = async (dir: string, create: boolean): Promise<boolean> => {
	const stat = await fs.lstat(dir).catch((error: NodeJS.ErrnoException) => {
		if (error.code === 'ENOENT') {
			return undefined;
		}

		throw error;
	});
	if (stat === undefined) {
		if (!create) {
			return false;
		}

		await fs.mkdir(path.dirname(dir), {recursive: true, mode: 0o700});
		await fs.mkdir(dir, {mode: 0o700}).catch((error: NodeJS.ErrnoException) => {
			if (error.code !== 'EEXIST') {
				throw error;
			}
		});
		return checkFolder(dir, false);
	}

	if (!stat.isDirectory()) {
		throw refuseFile(dir, stat.isSymbolicLink() ? 'is a symbolic link, not exobuild\'s config folder (never followed)' : 'is not a folder');
	}

	return true;
};

/** Reads and validates nodes.json; no file is no nodes. */
export const readNodes = async (env?: NodeJS.ProcessEnv): Promise<NodesDocument> => {
	const file = nodesFile(env);
	if (!await checkFolder(path.dirname(file), false)) {
		return emptyDocument;
	}

	let handle: fs.FileHandle;
	try {
		handle = await fs.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
	} catch (error) {
		const code = (error as NodeJS.ErrnoException).code;
		if (code === 'ENOENT') {
			return emptyDocument;
		}

		if (code === 'ELOOP') {
			throw refuseFile(file, 'is a symbolic link (never followed)', error);
		}

		throw error;
	}

	let text: string;
	try {
		const stat = await handle.stat();
		if (!stat.isFile()) {
			throw refuseFile(file, 'is not a regular file');
		}

		if (stat.size > maxNodesFileBytes) {
			throw refuseFile(file, `is ${stat.size} bytes, more than exobuild's node records ever are (${maxNodesFileBytes})`);
		}

		const buffer = Buffer.alloc(stat.size);
		const {bytesRead} = await handle.read(buffer, 0, stat.size, 0);
		text = buffer.subarray(0, bytesRead).toString('utf8');
	} finally {
		await handle.close();
	}

	let json: unknown;
	try {
		json = JSON.parse(text);
	} catch (error) {
		throw refuseFile(file, 'is not valid JSON', error);
	}

	const parsed = nodesDocumentSchema.safeParse(json);
	if (!parsed.success) {
		const [issue] = parsed.error.issues;
		throw refuseFile(file, `is not a valid node list (${issue?.path.join('.') || 'top'}: ${issue?.message ?? 'invalid'})`, parsed.error);
	}

	return parsed.data;
};

/** Validates `document` and writes it atomically (temp file in the same folder, fsync, rename). */
export const writeNodes = async (document: NodesDocument, env?: NodeJS.ProcessEnv): Promise<void> => {
	const valid = nodesDocumentSchema.parse(document);
	const file = nodesFile(env);
	const dir = path.dirname(file);
	await checkFolder(dir, true);
	// The file that is replaced must be a regular file (a link or a FIFO there is the user's, left alone).
	const existing = await fs.lstat(file).catch(() => undefined);
	if (existing !== undefined && !existing.isFile()) {
		throw refuseFile(file, existing.isSymbolicLink() ? 'is a symbolic link (never written through)' : 'is not a regular file');
	}

	await replaceFile(file, `${JSON.stringify(valid, undefined, 2)}\n`);
};

/** Runs read-modify-write of nodes.json under the config folder's lock. */
export const updateNodes = async <T>(change: (document: NodesDocument) => Promise<{document: NodesDocument; value: T}> | {document: NodesDocument; value: T}, env?: NodeJS.ProcessEnv): Promise<T> => {
	const dir = configDir(env);
	await checkFolder(dir, true);
	return withLock(path.join(dir, '.nodes.lock'), () => process.stderr.write('exobuild: waiting for another exobuild changing the node list\n'), async () => {
		const {document, value} = await change(await readNodes(env));
		await writeNodes(document, env);
		return value;
	});
};

export const findNode = (document: NodesDocument, name: string): NodeRecord | undefined => document.nodes.find(node => node.name === name.toLowerCase());

export const unknownNode = (name: string, document: NodesDocument): UserError => new UserError(`no node named "${name}"`, {
	hint: document.nodes.length === 0 ? 'there are no nodes; add one with `exobuild node add NAME ADDR`' : `the nodes are: ${document.nodes.map(node => node.name).join(', ')} (see \`exobuild node ls\`)`,
});
