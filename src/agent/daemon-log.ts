/**
 * The engine daemon's log (buildkitd's own output): the agent writes it into the shared out folder
 * (daemonLogPath), never to progress output unless --debug. After the run the host keeps it in
 * exobuild's logs folder, so that an engine error can name a file that outlives the sandbox.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {constants} from 'node:fs';
import {logsDir} from '../paths.js';
import {daemonLogName, daemonLogPath} from './agent-args.js';

/** The most a kept daemon log holds (the end of a longer one). */
export const daemonLogMaxBytes = 8 * 1024 * 1024;
/** Logs of older builds beyond this many are removed. */
export const keptDaemonLogs = 20;

/**
 * Moves the daemon log out of the host's out folder into logsDir()/SESSION-engine-daemon.log and
 * returns its path; undefined when the agent wrote none (buildah has no daemon). The out folder
 * is written by the sandbox: only a regular file is taken (never a symlink: it is opened with
 * O_NOFOLLOW and checked), and at most its last daemonLogMaxBytes are copied.
 */
export const keepDaemonLog = async (outDir: string, sessionId: string, env?: NodeJS.ProcessEnv): Promise<string | undefined> => {
	const source = path.join(outDir, daemonLogName);
	let handle: fs.FileHandle;
	try {
		handle = await fs.open(source, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
	} catch {
		return undefined;
	}

	try {
		const stat = await handle.stat();
		if (!stat.isFile()) {
			return undefined;
		}

		const length = Math.min(stat.size, daemonLogMaxBytes);
		const buffer = Buffer.alloc(length);
		const {bytesRead} = await handle.read(buffer, 0, length, stat.size - length);
		const dir = logsDir(env);
		await fs.mkdir(dir, {recursive: true, mode: 0o700});
		const kept = path.join(dir, `${sessionId.replaceAll(/[^A-Za-z0-9._-]/g, '_')}-${daemonLogName}`);
		await fs.writeFile(kept, buffer.subarray(0, bytesRead), {mode: 0o600, flag: 'w'});
		// Trimming the folder is housekeeping: builds ending at once remove each other's oldest logs, never fail for it.
		await pruneDaemonLogs(dir).catch(() => undefined);
		return kept;
	} finally {
		await handle.close();
		await fs.rm(source, {force: true});
	}
};

const pruneDaemonLogs = async (dir: string): Promise<void> => {
	const names = (await fs.readdir(dir)).filter(name => name.endsWith(`-${daemonLogName}`));
	// A log another build removed since readdir is simply not there any more.
	const dated = (await Promise.all(names.map(async name => ({name, mtime: (await fs.lstat(path.join(dir, name)).catch(() => undefined))?.mtimeMs}))))
		.filter((entry): entry is {name: string; mtime: number} => entry.mtime !== undefined);
	dated.sort((a, b) => b.mtime - a.mtime);
	await Promise.all(dated.slice(keptDaemonLogs).map(async ({name}) => fs.rm(path.join(dir, name), {force: true})));
};

/** An agent error message with the daemon log's sandbox path replaced by where the host kept it. */
export const withKeptDaemonLog = (message: string, kept: string | undefined): string =>
	kept === undefined ? message : message.replaceAll(daemonLogPath, kept);
