/**
 * The id map of a sandbox's user namespace.
 *
 * - A normal user (the default): sandbox uid/gid 0 is the invoking user, 1..N are the user's
 *   subordinate ids from /etc/subuid and /etc/subgid, written by the setuid helpers newuidmap and
 *   newgidmap (package uidmap), as Podman does. buildah in the sandbox needs a full-ish range (a
 *   single id fails on supplemental groups), so at least 65536 subordinate ids are required.
 * - root: the identity map 0..65535, written directly. Root already has every power on the host,
 *   so a subordinate range would buy little, and it would need root lines in /etc/subuid (not
 *   made by default) plus a builder rootfs chowned into that range; the identity map needs
 *   neither and keeps root's files readable in the sandbox.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {execa} from 'execa';
import {UserError} from '../../errors.js';

/** Subordinate ids a sandbox needs (buildah's containers use ids up to 65534, nobody). */
export const requiredSubordinateIds = 65_536;
/** The identity map's size when running as root. */
export const identityMapSize = 65_536;

export interface IdRange {
	readonly start: number;
	readonly count: number;
}

export type IdMap =
	| {readonly kind: 'identity'; readonly size: number}
	| {readonly kind: 'subordinate'; readonly uid: number; readonly gid: number; readonly uids: readonly IdRange[]; readonly gids: readonly IdRange[]};

export const subuidFile = '/etc/subuid';
export const subgidFile = '/etc/subgid';

/** The ranges of `/etc/subuid`-style text that belong to the user (by name or by numeric id), in file order. */
export const parseSubordinateRanges = (text: string, user: {name: string; id: number}): IdRange[] => text.split('\n').flatMap(line => {
	const [owner, start, count] = line.trim().split(':');
	if (owner === undefined || start === undefined || count === undefined || !/^\d+$/.test(start) || !/^\d+$/.test(count)) {
		return [];
	}

	return owner === user.name || owner === String(user.id) ? [{start: Number(start), count: Number(count)}] : [];
});

export const totalIds = (ranges: readonly IdRange[]): number => ranges.reduce((sum, range) => sum + range.count, 0);

const currentUser = (): {name: string; uid: number; gid: number} => {
	const info = os.userInfo();
	return {name: info.username, uid: info.uid, gid: info.gid};
};

/** The command that gives `user` a big enough range in both files. */
export const addSubordinateIdsCommand = (user: string): string => `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${user}`;

/** The user's ranges in one of the files; a UserError naming the file and the fix when there are fewer than required. */
export const subordinateRanges = async (file: string, user = currentUser()): Promise<IdRange[]> => {
	const text = await fs.readFile(file, 'utf8').catch(() => '');
	const ranges = parseSubordinateRanges(text, {name: user.name, id: file === subgidFile ? user.gid : user.uid});
	const total = totalIds(ranges);
	if (total < requiredSubordinateIds) {
		throw new UserError(`${file} gives ${user.name} ${total === 0 ? 'no subordinate ids' : `only ${total} subordinate ids`}; a sandbox needs ${requiredSubordinateIds}`, {
			hint: `as root, run: ${addSubordinateIdsCommand(user.name)} (any free range of ${requiredSubordinateIds} ids works), or run exobuild as root`,
			code: 'E_SUBORDINATE_IDS',
			exitCode: 2,
		});
	}

	return ranges;
};

/** The setuid helper's path, or a UserError naming the package. */
export const idMapTool = async (tool: 'newuidmap' | 'newgidmap'): Promise<string> => {
	for (const dir of [...(process.env['PATH'] ?? '').split(':').filter(Boolean), '/usr/bin', '/bin']) {
		const candidate = path.join(dir, tool);
		if (await fs.access(candidate, fs.constants.X_OK).then(() => true, () => false)) {
			return candidate;
		}
	}

	throw new UserError(`${tool} is not installed (a normal user's sandbox is mapped through it)`, {
		hint: 'install the uidmap package (apt-get install uidmap), or run exobuild as root',
		code: 'E_DEPENDENCY',
		exitCode: 2,
	});
};

let cached: Promise<IdMap> | undefined;

/** The id map of this process's sandboxes (checked once per process). */
export const sandboxIdMap = async (): Promise<IdMap> => {
	cached ??= (async (): Promise<IdMap> => {
		if (process.getuid?.() === 0) {
			return {kind: 'identity', size: identityMapSize};
		}

		await idMapTool('newuidmap');
		await idMapTool('newgidmap');
		const user = currentUser();
		return {kind: 'subordinate', uid: user.uid, gid: user.gid, uids: await subordinateRanges(subuidFile, user), gids: await subordinateRanges(subgidFile, user)};
	})();
	// A failed check is not kept: the user may fix it and retry in the same process (tests).
	return cached.catch(error => {
		cached = undefined;
		throw error;
	});
};

/** newuidmap/newgidmap arguments: 0 → own id, then the ranges from 1 on. */
export const mapArguments = (pid: number, own: number, ranges: readonly IdRange[]): string[] => {
	const args = [String(pid), '0', String(own), '1'];
	let inside = 1;
	for (const range of ranges) {
		args.push(String(inside), String(range.start), String(range.count));
		inside += range.count;
	}

	return args;
};

/**
 * The identity map of ids 0..size-1 as lines of /proc/PID/uid_map, split where this process's
 * own map (`ownMap`, the text of /proc/self/uid_map) changes extent: the kernel wants each line
 * inside one extent of the parent. Root of the initial namespace has one extent; root of a user
 * namespace made with `unshare --map-root-user --map-auto` (e.g. to own a network namespace) has two.
 */
export const identityMapLines = (ownMap: string, size: number): string => ownMap.trim().split('\n')
	.map(line => line.trim().split(/\s+/).map(Number))
	.filter(fields => fields.length === 3 && fields.every(Number.isFinite))
	.map(([inside = 0, , count = 0]) => [inside, Math.min(inside + count, size)] as const)
	.filter(([start, end]) => start < end)
	.sort(([a], [b]) => a - b)
	.map(([start, end]) => `${start} ${start} ${end - start}\n`)
	.join('');

/** Writes the maps of the user namespace of `pid` (which must not have them yet). */
export const writeIdMaps = async (pid: number, map: IdMap): Promise<void> => {
	if (map.kind === 'identity') {
		await fs.writeFile(`/proc/${pid}/uid_map`, identityMapLines(await fs.readFile('/proc/self/uid_map', 'utf8'), map.size));
		await fs.writeFile(`/proc/${pid}/setgroups`, 'allow\n');
		await fs.writeFile(`/proc/${pid}/gid_map`, identityMapLines(await fs.readFile('/proc/self/gid_map', 'utf8'), map.size));
		return;
	}

	for (const [tool, own, ranges, file] of [['newuidmap', map.uid, map.uids, subuidFile], ['newgidmap', map.gid, map.gids, subgidFile]] as const) {
		const result = await execa(await idMapTool(tool), mapArguments(pid, own, ranges), {reject: false, all: true});
		if (result.exitCode !== 0) {
			// The process may simply have died (its own exit status then says why): not the map's fault.
			if (!(await fs.access(`/proc/${pid}`).then(() => true, () => false))) {
				return;
			}

			throw new UserError(`${tool} could not map the sandbox's ids: ${String(result.all).trim().split('\n').pop() ?? `exit ${result.exitCode}`}`, {
				hint: `check ${file} (the user needs ${requiredSubordinateIds} ids there) and that ${tool} is setuid root (reinstall uidmap)`,
				code: 'E_SUBORDINATE_IDS',
				exitCode: 2,
			});
		}
	}
};
