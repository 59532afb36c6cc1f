/**
 * The host-side scratch folder of one build (output layout, per-platform base image views),
 * under runsDir() with an owner record so that a run killed hard is cleaned by the next one.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {runsDir} from '../paths.js';
import {createOwnedDir, reapOwnedDirs} from '../runs/owned-dir.js';
import type {HostScratch} from '../agent/agent-args.js';

export interface OwnedHostScratch extends HostScratch {
	/** The scratch folder itself (for files such as a Dockerfile from stdin, or env secrets). */
	readonly root: string;
	remove(): Promise<void>;
}

const suffix = '.host';

export const createHostScratch = async (sessionId: string): Promise<OwnedHostScratch> => {
	const owned = await createOwnedDir(path.join(runsDir(), `${sessionId}${suffix}`), 'host-scratch');
	const outDir = path.join(owned.path, 'out');
	const viewsDir = path.join(owned.path, 'views');
	await Promise.all([fs.mkdir(outDir), fs.mkdir(viewsDir)]);
	return {root: owned.path, outDir, viewsDir, remove: owned.remove};
};

export const reapHostScratch = async (): Promise<string[]> => reapOwnedDirs(runsDir(), name => name.endsWith(suffix));
