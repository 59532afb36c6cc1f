/**
 * The simulated VM of one container (`main.js __vm ID`, started detached in its own session):
 * runs the container's init process in exobuild's linux-userns sandbox (own user, mount, pid,
 * ipc and uts namespaces — and so its own binfmt_misc instance, like a VM's own kernel), writes
 * its output line by line to the container's stdout/stderr/log files, and records its state.
 */
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {packageRoot} from '../../../src/paths.js';
import {runInNamespaces} from '../../../src/sandboxes/linux-userns/namespaces.js';
import {rosettaTarget} from './run.js';
import {alive, containerFiles, readContainer, writeJsonAtomically, paths, type ContainerRecord} from './state.js';

const enterScript = path.join(packageRoot, 'src', 'sandboxes', 'linux-userns', 'enter-sandbox.sh');

const childrenOf = (pid: number): number[] => {
	try {
		return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
	} catch {
		return [];
	}
};

const cmdline = (pid: number): string => {
	try {
		return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
	} catch {
		return '';
	}
};

/**
 * The host pid of the container's init process: this process → unshare → the namespace's pid 1
 * (a shell) → its child that is not a fork of that shell (the watcher is one).
 */
const findMainPid = (): number | undefined => {
	for (const unshare of childrenOf(process.pid)) {
		for (const init of childrenOf(unshare)) {
			const initCmdline = cmdline(init);
			const main = childrenOf(init).find(child => cmdline(child) !== initCmdline && cmdline(child) !== '');
			if (main !== undefined) {
				return main;
			}
		}
	}

	return undefined;
};

/**
 * Rosetta as vminitd sets it up (containerization 0.40.1, Vminitd+Rosetta.swift and
 * ContainerizationOS/Linux/Binfmt.swift): the translator shared at /run/rosetta, and a binfmt_misc
 * entry `:x86_64:M::<amd64 ELF magic>:<mask>:/run/rosetta/rosetta:CF` in the VM's one table,
 * registered before the container starts and not mounted in the container. Here: the host's
 * QEMU for the target stands in for the translator, and the entry goes into the sandbox's own
 * binfmt_misc instance (its user namespace's, the one the agent's mount shows).
 */
const rosettaEntry = (target: string): {name: string; magic: string; mask: string; emulator: string} => (target === 'amd64'
	? {
		name: 'x86_64', emulator: 'x86_64',
		magic: String.raw`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00`,
		mask: String.raw`\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`,
	}
	: {
		name: 'aarch64', emulator: 'aarch64',
		magic: String.raw`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00`,
		mask: String.raw`\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`,
	});

/** The folder shared at /run/rosetta: a copy of the host's QEMU for `target`, and the marker the container waits for. */
const prepareRosetta = (record: ContainerRecord, target: string): string => {
	const {emulator} = rosettaEntry(target);
	const translator = [`/usr/bin/qemu-${emulator}-static`, `/usr/bin/qemu-${emulator}`].find(candidate => fs.existsSync(candidate));
	if (translator === undefined) {
		throw new Error(`simulator: no /usr/bin/qemu-${emulator}(-static) on this host to play Rosetta with`);
	}

	const dir = path.join(containerFiles(record.id).dir, 'rosetta');
	fs.rmSync(dir, {recursive: true, force: true});
	fs.mkdirSync(dir);
	fs.copyFileSync(translator, path.join(dir, 'rosetta'));
	fs.chmodSync(path.join(dir, 'rosetta'), 0o755);
	return dir;
};

const rosettaReady = '.registered';
const rosettaWait = 'rosetta-wait';

const descendants = (pid: number): number[] => childrenOf(pid).flatMap(child => [child, ...descendants(child)]);

/**
 * Registers the entry from outside, then lets the container go on. A Linux binfmt_misc instance
 * (one per user namespace, 6.7+) lives as long as a mount of it: in the VM, vminitd's mount in the
 * root namespace holds it. Here a helper holds it: it joins the sandbox's user, mount and pid
 * namespaces and root, makes a private copy of the mount namespace, mounts binfmt_misc there,
 * registers, and sleeps. The container never sees that mount; the helper dies with the sandbox's
 * pid namespace.
 */
const registerRosetta = async (pid: number, target: string, dir: string): Promise<void> => {
	const {name, magic, mask} = rosettaEntry(target);
	const inner = 'mount --make-rprivate / 2>/dev/null; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && printf %s "$1" > /proc/sys/fs/binfmt_misc/register && echo registered && exec sleep 2147483647';
	const helper = spawn('nsenter', ['-t', String(pid), '-U', '-m', '-p', '-r', '-w', '--', 'unshare', '-m', '--', '/bin/sh', '-c', inner, 'vminitd', `:${name}:M::${magic}:${mask}:/run/rosetta/rosetta:CF`], {stdio: ['ignore', 'pipe', 'pipe']});
	let stderr = '';
	helper.stderr.on('data', (chunk: Buffer) => {
		stderr += chunk.toString();
	});
	const registered = await new Promise<boolean>(resolve => {
		helper.stdout.on('data', (chunk: Buffer) => {
			if (chunk.toString().includes('registered')) {
				resolve(true);
			}
		});
		helper.on('exit', () => resolve(false));
		helper.on('error', () => resolve(false));
	});
	helper.stdout.destroy();
	helper.stderr.destroy();
	helper.unref();
	if (!registered) {
		throw new Error(`simulator: registering the Rosetta entry failed: ${stderr.trim() || 'the helper exited'}`);
	}

	fs.writeFileSync(path.join(dir, rosettaReady), '');
};

const sandboxArgv = (record: ContainerRecord, runDir: string, rosettaDir: string | undefined): string[] => {
	// The namespace's pid 1 starts its command as a shell background job, which ignores SIGINT and
	// SIGQUIT: the host's env gives the container's init process their default dispositions back.
	const args = ['env', '--default-signal=INT,QUIT', '/bin/sh', enterScript, record.rootfs, runDir];
	for (const mount of record.mounts) {
		if (mount.type === 'tmpfs') {
			continue; // not simulated: the path stays the rootfs's
		}

		const host = mount.type === 'bind' ? mount.source : paths.volumeData(mount.source);
		args.push('--mount', mount.readonly ? 'ro' : 'rw', host, mount.destination);
	}

	for (const entry of record.env) {
		args.push('--env', entry);
	}

	if (record.workdir !== '/') {
		args.push('--workdir', record.workdir);
	}

	if (record.readOnlyProcSys) {
		args.push('--ro-proc-sys');
	}

	if (record.boundingSet !== undefined) {
		args.push('--bounding-set', record.boundingSet);
	}

	if (rosettaDir !== undefined) {
		// The container starts once vminitd's entry is in (registerRosetta writes the marker).
		args.push('--mount', 'ro', rosettaDir, '/run/rosetta');
		return [...args, '--', '/bin/sh', '-c', `while [ ! -e /run/rosetta/${rosettaReady} ]; do sleep 0.02; done; exec "$@"`, rosettaWait, ...record.command];
	}

	return [...args, '--', ...record.command];
};

const update = (id: string, change: Partial<ContainerRecord>): ContainerRecord | undefined => {
	const record = readContainer(id);
	if (record === undefined) {
		return undefined;
	}

	const next = {...record, ...change};
	writeJsonAtomically(containerFiles(id).record, next);
	return next;
};

export const runVm = async (id: string): Promise<void> => {
	const record = readContainer(id);
	if (record === undefined) {
		return;
	}

	const files = containerFiles(id);
	const writeLine = (file: string) => (line: string): void => {
		fs.appendFileSync(file, `${line}\n`);
		fs.appendFileSync(files.log, `${line}\n`);
	};

	let mainPid: number | undefined;
	const forward = (signal: NodeJS.Signals): void => {
		if (mainPid !== undefined) {
			try {
				process.kill(mainPid, signal);
			} catch {}
		}
	};

	for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const) {
		process.on(signal, forward);
	}

	fs.rmSync(files.run, {recursive: true, force: true});
	fs.mkdirSync(files.run, {recursive: true});
	update(id, {state: 'running', vmPid: process.pid, startedDate: new Date().toISOString()});
	// run -i: the client writes its stdin into this FIFO.
	const stdin = fs.existsSync(files.stdin) ? fs.createReadStream(files.stdin) : undefined;
	stdin?.on('error', () => undefined);
	const target = record.rosetta ? rosettaTarget() : undefined;
	let rosettaDir: string | undefined;
	try {
		rosettaDir = target === undefined ? undefined : prepareRosetta(record, target);
	} catch (error) {
		writeLine(files.stderr)(`Error: ${(error as Error).message}`);
		update(id, {state: 'stopped', exitCode: 1});
		return;
	}

	const exit = runInNamespaces(sandboxArgv(record, files.run, rosettaDir), {
		onStdoutLine: writeLine(files.stdout), onStderrLine: writeLine(files.stderr), ...(stdin === undefined ? {} : {stdin}),
	});
	let done = false;
	void exit.finally(() => {
		done = true;
	});
	while (!done && mainPid === undefined) {
		mainPid = findMainPid();
		if (mainPid === undefined) {
			await sleep(5);
		}
	}

	if (mainPid !== undefined) {
		update(id, {mainPid});
		if (target !== undefined && rosettaDir !== undefined) {
			try {
				// The process waiting in the container (its root and namespaces are the container's),
				// not a setup command of the sandbox that findMainPid may have seen first.
				let waiting: number | undefined;
				for (let attempt = 0; attempt < 1000 && waiting === undefined && !done; attempt++) {
					waiting = descendants(process.pid).find(pid => cmdline(pid).split('\0')[3] === rosettaWait);
					if (waiting === undefined) {
						await sleep(5);
					}
				}

				if (waiting === undefined) {
					throw new Error('simulator: the container did not start (no process waiting for Rosetta)');
				}

				await registerRosetta(waiting, target, rosettaDir);
			} catch (error) {
				writeLine(files.stderr)(`Error: ${(error as Error).message}`);
				process.kill(mainPid, 'SIGKILL');
			}
		}
	}

	const result = await exit;
	const exitCode = result.exitCode ?? 137;
	fs.rmSync(files.run, {recursive: true, force: true});
	const final = update(id, {state: 'stopped', exitCode});
	if (final?.remove) {
		// A foreground client still reading the output says when it is done.
		const client = Number.parseInt(fs.existsSync(files.attached) ? fs.readFileSync(files.attached, 'utf8') : '', 10);
		for (let attempt = 0; attempt < 1000 && alive(Number.isNaN(client) ? undefined : client) && !fs.existsSync(files.ack); attempt++) {
			await sleep(10);
		}

		fs.rmSync(files.dir, {recursive: true, force: true});
	}
};
