/**
 * What this checkout's builds leave behind, on a machine where other checkouts build at the same
 * time: only processes, mounts and run folders that belong to this checkout's test cache count.
 * A process belongs to it when its command line names the checkout or the cache, or when its
 * mount table does (a sandbox's processes see the overlay of a rootfs in that cache).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {execa} from 'execa';
import {exobuildEnv, repoRoot} from '../e2e/helpers.js';

const ownedBy = (text: string, cacheDir: string): boolean => text.includes(cacheDir) || text.includes(path.resolve(repoRoot));

const readOrEmpty = (file: string): string => {
	try {
		return fs.readFileSync(file, 'utf8');
	} catch {
		return '';
	}
};

export const ownLeftovers = async (cacheDir: string = exobuildEnv.EXOBUILD_CACHE_DIR): Promise<{processes: string[]; mounts: string[]; runs: string[]}> => {
	const ps = await execa('ps', ['-eo', 'pid=,args='], {reject: false});
	const processes = ps.stdout.split('\n')
		.filter(line => /buildah|buildkitd|qemu-|exobuild-agent|unshare --user|enter-sandbox|mmdebstrap/.test(line) && !/ps -eo/.test(line))
		.filter(line => {
			const pid = line.trim().split(/\s+/)[0]!;
			return ownedBy(line, cacheDir) || ownedBy(readOrEmpty(`/proc/${pid}/mountinfo`), cacheDir);
		});
	const mounts = readOrEmpty('/proc/self/mountinfo').split('\n').filter(line => ownedBy(line, cacheDir));
	const runsPath = path.join(cacheDir, 'runs');
	const runs = fs.existsSync(runsPath) ? fs.readdirSync(runsPath) : [];
	return {processes, mounts, runs};
};

/** Waits (up to 5 s) for this checkout's builds to have left nothing. */
export const assertNothingLeftHere = async (cacheDir?: string): Promise<void> => {
	for (let attempt = 0; attempt < 50; attempt++) {
		const left = await ownLeftovers(cacheDir);
		if (left.processes.length === 0 && left.mounts.length === 0 && left.runs.length === 0) {
			return;
		}

		await new Promise(resolve => setTimeout(resolve, 100));
	}

	assert.deepEqual(await ownLeftovers(cacheDir), {processes: [], mounts: [], runs: []});
};
