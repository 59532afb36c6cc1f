/**
 * Processes in a new user + mount + pid + ipc + uts namespace with a full-ish id map, which
 * buildah needs (a single mapped id fails on supplemental groups): see id-map.ts. As a normal
 * user, uid/gid 0 inside is the invoking user and 1..65536 its subordinate ids (newuidmap and
 * newgidmap, run from outside on the paused child, as Podman does); as root, the identity map.
 *
 * unshare starts paused: the namespace's pid 1 waits on fd 3 (a socket to this process) until
 * the maps are written, then starts the command, which thereby gets full capabilities in the
 * namespace (an exec before the map is written would drop them).
 *
 * The namespace lives exactly as long as this process: pid 1 keeps reading fd 3, and when it
 * sees end-of-file (exobuild exited or was killed, even with SIGKILL) it exits, and the kernel
 * kills every process of the pid namespace with it. (A parent-death signal on unshare is no
 * use: creating the user namespace changes unshare's credentials, which clears it.)
 */
import fs from 'node:fs/promises';
import {readLines} from '../read-lines.js';
import {setTimeout as sleep} from 'node:timers/promises';
import {execa} from 'execa';
import {UserError} from '../../errors.js';
import {sandboxIdMap, writeIdMaps} from './id-map.js';

export interface NamespacedRun {
	readonly onStdoutLine?: (line: string) => void;
	readonly onStderrLine?: (line: string) => void;
	readonly signal?: AbortSignal;
	readonly cwd?: string;
	/** Written to the command's stdin, which is then closed (a stream is piped); without it stdin is /dev/null. */
	readonly stdin?: string | NodeJS.ReadableStream;
}

export interface NamespacedExit {
	readonly exitCode: number | undefined;
	readonly signal: string | undefined;
}

const readlinkOrUndefined = async (file: string): Promise<string | undefined> => fs.readlink(file).catch(() => undefined);

/**
 * pid 1 of the namespace: waits for the id maps, runs the command as its child, and ends
 * (taking the namespace with it) when the command ends or when fd 3 reaches end-of-file.
 */
const namespaceInit = [
	'trap "exit 137" TERM',
	'read -r _ <&3 || exit 137',
	'{ cat <&3 >/dev/null; kill -TERM $$; } &',
	'watcher=$!',
	// An asynchronous command's stdin is /dev/null unless redirected: give it the run's (fd 4).
	'exec 4<&0',
	'"$@" 3<&- 0<&4 4<&- &',
	'wait $!',
	'status=$?',
	'kill $watcher 2>/dev/null',
	'exit $status',
].join('\n');

/**
 * Pids of the processes whose pid namespace is `nsLink` (e.g. "pid:[4026532841]"). The link names
 * the namespace only by its inode number, which the kernel gives to the next namespace made once
 * this one is freed (another build's RUN step, any container on the host): call it only while
 * holding the namespace open (`holdPidNamespace`), so that the number stays this namespace's.
 */
export const processesInPidNamespace = async (nsLink: string): Promise<number[]> => {
	const pids = (await fs.readdir('/proc')).filter(name => /^\d+$/.test(name));
	const links = await Promise.all(pids.map(async pid => [Number(pid), await readlinkOrUndefined(`/proc/${pid}/ns/pid`)] as const));
	const members = links.filter(([, link]) => link === nsLink).map(([pid]) => pid);
	// A zombie holds no mount and runs nothing: it only waits for its (new) parent to reap it,
	// which, for the namespace's pid 1 reparented to the host's init, may take a while.
	const states = await Promise.all(members.map(async pid => (await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).replace(/^.*\) /s, '')[0]));
	return members.filter((_pid, index) => states[index] !== undefined && states[index] !== 'Z');
};

/** A pid namespace held open: while `handle` is open the namespace, and so its inode number, cannot be freed and reused. */
export interface HeldPidNamespace {
	readonly link: string;
	release(): Promise<void>;
}

/**
 * Opens the pid namespace of `pid` (which must not be able to exit meanwhile: the namespace's pid 1
 * still waiting for its start). Undefined if it is gone, or if it is this process's own namespace
 * (never to be emptied).
 */
export const holdPidNamespace = async (pid: number): Promise<HeldPidNamespace | undefined> => {
	const handle = await fs.open(`/proc/${pid}/ns/pid`, 'r').catch(() => undefined);
	if (handle === undefined) {
		return undefined;
	}

	const [link, own] = await Promise.all([readlinkOrUndefined(`/proc/self/fd/${handle.fd}`), readlinkOrUndefined('/proc/self/ns/pid')]);
	if (link === undefined || link === own) {
		await handle.close();
		return undefined;
	}

	return {link, release: async () => handle.close()};
};

const killQuietly = (pid: number): void => {
	try {
		process.kill(pid, 'SIGKILL');
	} catch {}
};

/** The child processes of a (single-threaded) process; undefined when it is gone. */
const childPids = async (pid: number): Promise<number[] | undefined> => {
	const children = await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => undefined);
	return children?.trim().split(/\s+/).filter(Boolean).map(Number);
};

/** The child unshare forks as the namespace's pid 1, polled for up to 2 s (undefined if unshare ends first). */
const forkedInit = async (unsharePid: number): Promise<number | undefined> => {
	for (let attempt = 0; attempt < 1000; attempt++) {
		const children = await childPids(unsharePid);
		if (children === undefined) {
			return undefined;
		}

		if (children.length > 0) {
			return children[0];
		}

		await sleep(2);
	}

	return undefined;
};

/**
 * Runs argv as pid 1 of new namespaces and resolves when the namespace is gone: not only its
 * pid 1 but every process in it has exited (so its mounts are released).
 */
export const runInNamespaces = async (argv: readonly string[], run: NamespacedRun = {}): Promise<NamespacedExit> => {
	const ownUserNs = await fs.readlink('/proc/self/ns/user');
	// Checked before anything starts: a missing range is a UserError naming the fix.
	const idMap = await sandboxIdMap();
	const child = execa('setpriv', [
		'--pdeathsig', 'SIGKILL', '--',
		'unshare', '--user', '--mount', '--pid', '--ipc', '--uts', '--fork', '--kill-child', '--propagation', 'private', '--',
		'/bin/sh', '-c', namespaceInit, 'sh', ...argv,
	], {stdio: [run.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe', 'pipe'], reject: false, buffer: false, ...(run.cwd === undefined ? {} : {cwd: run.cwd})});
	if (run.stdin !== undefined && child.stdin !== null) {
		child.stdin.on('error', () => undefined); // the command may end without reading it
		if (typeof run.stdin === 'string') {
			child.stdin.end(run.stdin);
		} else {
			run.stdin.pipe(child.stdin);
		}
	}

	const outputs = Promise.all([readLines(child.stdout, run.onStdoutLine), readLines(child.stderr, run.onStderrLine)]);

	const pid = child.pid;
	let namespace: HeldPidNamespace | undefined;
	// Once unshare is reaped its pid, and its children's, may be another process's: never signalled then.
	const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
	const killAll = async (): Promise<void> => {
		if (exited()) {
			return;
		}

		if (pid === undefined) {
			return;
		}

		for (const initPid of await childPids(pid) ?? []) {
			killQuietly(initPid);
		}

		killQuietly(pid);
	};

	const onAbort = (): void => {
		void killAll();
	};

	run.signal?.addEventListener('abort', onAbort, {once: true});
	try {
		if (pid === undefined) {
			throw new Error('could not start setpriv/unshare');
		}

		// Wait for unshare(2), then write the maps as the parent namespace's root.
		for (;;) {
			const userNs = exited() ? undefined : await readlinkOrUndefined(`/proc/${pid}/ns/user`);
			if (userNs === undefined) {
				break; // it died; its exit status tells why
			}

			if (userNs !== ownUserNs) {
				await writeIdMaps(pid, idMap);
				// pid 1 (forked by unshare just after unshare(2)) waits for "go": its namespace is held
				// open now, so that the sweep below can never take another namespace for this one.
				const init = await forkedInit(pid);
				if (init !== undefined) {
					namespace = await holdPidNamespace(init);
				}

				// Written, not ended: pid 1 takes end-of-file on fd 3 as "exobuild is gone".
				const control = child.stdio[3] as unknown as NodeJS.WritableStream;
				control.write('go\n');
				break;
			}

			await sleep(2);
		}

		if (run.signal?.aborted) {
			await killAll();
		}

		const result = await child;
		await outputs;
		return {exitCode: result.exitCode, signal: result.signal};
	} finally {
		run.signal?.removeEventListener('abort', onAbort);
		await killAll();
		if (namespace !== undefined) {
			try {
				for (let attempt = 0; attempt < 500; attempt++) {
					const left = await processesInPidNamespace(namespace.link);
					if (left.length === 0) {
						break;
					}

					for (const leftPid of left) {
						killQuietly(leftPid);
					}

					await sleep(10);
				}
			} finally {
				await namespace.release();
			}
		}
	}
};

/**
 * Removes a tree the sandbox made in exobuild's cache (engine storage, a run's state): files owned
 * by subordinate ids, which the user cannot remove from the host. `rm -rf` runs as root of a user
 * namespace with the sandbox's mapping, where every owner is mapped (Podman's `podman unshare rm`).
 */
export const removeInUserNamespace = async (dir: string): Promise<void> => {
	const stderr: string[] = [];
	const exit = await runInNamespaces(['rm', '-rf', '--', dir], {onStderrLine: line => stderr.push(line)});
	if (exit.exitCode !== 0) {
		throw new UserError(`could not remove ${dir} in a user namespace: ${stderr.at(-1) ?? `rm exit ${exit.exitCode ?? exit.signal}`}`, {
			hint: `remove it as root (sudo rm -rf ${dir})`,
			code: 'E_REMOVE',
			exitCode: 1,
		});
	}
};

/**
 * Runs a host command (the host's root filesystem, no pivot) in new namespaces with the
 * sandbox's id map (id-map.ts): a fixture can mount its own binfmt_misc there and run foreign binaries without
 * touching the host's table.
 */
export const runInPrivateUserns = async (argv: readonly string[], options: {cwd?: string} = {}): Promise<{exitCode: number; stdout: string; stderr: string}> => {
	const stdout: string[] = [];
	const stderr: string[] = [];
	const exit = await runInNamespaces(argv, {onStdoutLine: line => stdout.push(line), onStderrLine: line => stderr.push(line), ...options});
	return {exitCode: exit.exitCode ?? 128, stdout: stdout.join('\n'), stderr: stderr.join('\n')};
};
