/** Shared helpers of the end-to-end tests: run the real CLI, and check what a build leaves behind. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {execa} from 'execa';
import {builderArchitecture} from '../../src/builder-image/index.js';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const bin = path.join(repoRoot, 'bin', 'exobuild');
/** Shared by all e2e tests so the builder image and fixtures are made once. */
export const testCacheDir = path.join(repoRoot, '.cache', 'e2e');
export const fixturesDir = path.join(repoRoot, '.cache', 'fixtures');

/**
 * The upstream tarballs this setup provides next to the project (`../shared/upstream`: BuildKit
 * and tonistiigi/binfmt built from their tags, see its README) for this machine's architecture,
 * or why there are none (a clone outside this setup): a test that needs them skips with that reason.
 * Only tests use this folder; exobuild itself takes the tarballs from --buildkit/--binfmt or
 * EXOBUILD_BUILDKIT/EXOBUILD_BINFMT.
 */
export const upstreamTarballs = (): {buildkit: string; binfmt: string} | {skip: string} => {
	const dir = path.resolve(repoRoot, '..', 'shared', 'upstream');
	const arch = builderArchitecture();
	const names = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
	const find = (pattern: RegExp): string | undefined => names.filter(name => pattern.test(name)).sort().at(-1);
	const buildkit = find(new RegExp(`^buildkit-v[\\d.]+\\.linux-${arch}\\.tar\\.gz$`));
	const binfmt = find(new RegExp(`^binfmt-.*\\.linux-${arch}\\.tar\\.gz$`));
	if (buildkit === undefined || binfmt === undefined) {
		return {skip: `no BuildKit and binfmt tarballs for linux/${arch} in ${dir} (this setup's ../shared/upstream; see docs/buildkit.md)`};
	}

	return {buildkit: path.join(dir, buildkit), binfmt: path.join(dir, binfmt)};
};

/** EXOBUILD_BUILDKIT and EXOBUILD_BINFMT naming the upstream tarballs, when they are there (else nothing: the builder is made as a user's would be). */
export const upstreamEnv = (): Record<string, string> => {
	const tarballs = upstreamTarballs();
	return 'skip' in tarballs ? {} : {EXOBUILD_BUILDKIT: tarballs.buildkit, EXOBUILD_BINFMT: tarballs.binfmt};
};

/**
 * The e2e tests' environment: their own cache, their own (empty) config folder, so a developer's
 * nodes.json never routes a test build to their nodes, and the upstream BuildKit and binfmt where
 * this setup has them.
 */
export const exobuildEnv: Record<string, string> & {EXOBUILD_CACHE_DIR: string} = {
	EXOBUILD_CACHE_DIR: path.join(testCacheDir, 'exobuild'), XDG_CONFIG_HOME: path.join(testCacheDir, 'config'), CI: '1', ...upstreamEnv(),
};

/**
 * An assertion message for a CLI run that should have succeeded: the exit code and the output's
 * last lines first (the cause is at the end; CI shows a message's first lines only), then it whole.
 */
export const failure = (result: {readonly exitCode?: number | undefined; readonly all?: unknown}, lines = 12): string => {
	const all = String(result.all ?? '');
	const last = all.trimEnd().split('\n').slice(-lines).join('\n');
	return `exit ${result.exitCode ?? '?'}; the output ends:\n${last}\n--- the whole output:\n${all}`;
};

export const exobuild = (args: readonly string[], options: {env?: Record<string, string>} = {}) =>
	execa(bin, args, {reject: false, all: true, env: {...exobuildEnv, ...options.env}});

/** The host's binfmt_misc as it is: whether it is mounted, and every entry with its content. */
export const hostBinfmtSnapshot = (): string => {
	const dir = '/proc/sys/fs/binfmt_misc';
	const mounted = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(line => line.split(' ')[4] === dir);
	const entries = fs.readdirSync(dir).sort().map(name => {
		let content: string;
		try {
			content = fs.readFileSync(path.join(dir, name), 'utf8');
		} catch (error) {
			content = `<${(error as NodeJS.ErrnoException).code}>`;
		}

		return `${name}:\n${content}`;
	});
	return JSON.stringify({mounted: mounted.length, entries});
};

/**
 * Whether a host uid can belong to this test run's sandboxes: as root, any (the identity map);
 * as a normal user, its own uid and its /etc/subuid ranges (other users' builds are not ours).
 */
const ownedUid = (): ((uid: number) => boolean) => {
	const own = process.getuid?.() ?? 0;
	if (own === 0) {
		return () => true;
	}

	const name = os.userInfo().username;
	const ranges = (fs.existsSync('/etc/subuid') ? fs.readFileSync('/etc/subuid', 'utf8') : '').split('\n')
		.map(line => line.trim().split(':'))
		.filter(([owner]) => owner === name || owner === String(own))
		.map(([, start, count]) => [Number(start), Number(count)] as const);
	return uid => uid === own || ranges.some(([start, count]) => uid >= start && uid < start + count);
};

/** Processes, mounts and run folders a build could leave behind. */
export const leftovers = async (): Promise<{processes: string[]; mounts: string[]; runs: string[]}> => {
	const ps = await execa('ps', ['-eo', 'pid=,ppid=,uid=,args='], {reject: false});
	const ours = ownedUid();
	const rows = ps.stdout.split('\n').map(line => {
		const [pid, ppid, uid, ...args] = line.trim().split(/\s+/);
		return {pid: Number(pid), ppid: Number(ppid), uid: Number(uid), line: `${pid} ${uid} ${args.join(' ')}`, args: args.join(' ')};
	});
	const byPid = new Map(rows.map(row => [row.pid, row]));
	// A sandbox of this checkout has an ancestor naming it (exobuild's own process, or the sandbox's
	// unshare naming this checkout's cache): builds of other checkouts on the machine are not ours.
	const ofThisCheckout = (pid: number): boolean => {
		for (let row = byPid.get(pid), hops = 0; row !== undefined && hops < 64; row = byPid.get(row.ppid), hops++) {
			if (row.args.includes(repoRoot.replace(/\/$/, ''))) {
				return true;
			}
		}

		return false;
	};

	const processes = rows
		.filter(row => ours(row.uid) && ofThisCheckout(row.pid))
		.filter(row => /buildah|buildkitd|qemu-|exobuild-agent|unshare --user|enter-sandbox/.test(row.args) && !/ps -eo/.test(row.args))
		.map(row => row.line);
	const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(line => line.includes('exobuild'));
	const runsPath = path.join(exobuildEnv.EXOBUILD_CACHE_DIR, 'runs');
	const runs = fs.existsSync(runsPath) ? fs.readdirSync(runsPath) : [];
	return {processes, mounts, runs};
};

export const assertNothingLeft = async (): Promise<void> => {
	// Give a killed process group a moment to be reaped by its parent.
	for (let attempt = 0; attempt < 50; attempt++) {
		const left = await leftovers();
		if (left.processes.length === 0 && left.mounts.length === 0 && left.runs.length === 0) {
			return;
		}

		await new Promise(resolve => setTimeout(resolve, 100));
	}

	assert.deepEqual(await leftovers(), {processes: [], mounts: [], runs: []});
};

export const makeContext = (dir: string, files: Record<string, string>): string => {
	fs.mkdirSync(dir, {recursive: true});
	for (const [name, content] of Object.entries(files)) {
		fs.mkdirSync(path.dirname(path.join(dir, name)), {recursive: true});
		fs.writeFileSync(path.join(dir, name), content);
	}

	return dir;
};

/** ELF e_machine of a binary (to check a file really is of the platform's architecture). */
export const elfMachine = (content: Buffer): number => {
	assert.equal(content.subarray(0, 4).toString('latin1'), '\x7fELF');
	return content[5] === 2 ? content.readUInt16BE(18) : content.readUInt16LE(18);
};
