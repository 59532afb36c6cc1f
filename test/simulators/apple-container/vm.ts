/**
 * The simulated VM of one container (`main.js __vm ID`, started detached in its own session):
 * runs the container's init process in exobuild's linux-userns sandbox (own user, mount, pid,
 * ipc and uts namespaces — and so its own binfmt_misc instance, like a VM's own kernel), writes
 * its output line by line to the container's stdout/stderr/log files, and records its state.
 */
import fs from 'node:fs';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {packageRoot} from '../../../src/paths.js';
import {runInNamespaces} from '../../../src/sandboxes/linux-userns/namespaces.js';
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

const sandboxArgv = (record: ContainerRecord, runDir: string): string[] => {
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
	const exit = runInNamespaces(sandboxArgv(record, files.run), {
		onStdoutLine: writeLine(files.stdout), onStderrLine: writeLine(files.stderr), ...(stdin === undefined ? {} : {stdin}),
	});
	let done = false;
	void exit.finally(() => {
		done = true;
	});
	while (!done && mainPid === undefined) {
		mainPid = findMainPid();
		if (mainPid === undefined) {
			// eslint-disable-next-line no-await-in-loop
			await sleep(5);
		}
	}

	if (mainPid !== undefined) {
		update(id, {mainPid});
	}

	const result = await exit;
	const exitCode = result.exitCode ?? 137;
	fs.rmSync(files.run, {recursive: true, force: true});
	const final = update(id, {state: 'stopped', exitCode});
	if (final?.remove) {
		// A foreground client still reading the output says when it is done.
		const client = Number.parseInt(fs.existsSync(files.attached) ? fs.readFileSync(files.attached, 'utf8') : '', 10);
		for (let attempt = 0; attempt < 1000 && alive(Number.isNaN(client) ? undefined : client) && !fs.existsSync(files.ack); attempt++) {
			// eslint-disable-next-line no-await-in-loop
			await sleep(10);
		}

		fs.rmSync(files.dir, {recursive: true, force: true});
	}
};
