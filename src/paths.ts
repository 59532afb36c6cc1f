import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

/**
 * The checkout / package root (where vm-image/ lives): the nearest folder above this module with
 * vm-image/ in it. Found by walking up, so it is right both for dist/src/paths.js and for the
 * single-file bundle dist/exobuild.mjs.
 */
export const packageRoot = ((): string => {
	let dir = path.dirname(fileURLToPath(import.meta.url));
	while (!fs.existsSync(path.join(dir, 'vm-image', 'exobuild-agent'))) {
		const parent = path.dirname(dir);
		if (parent === dir) {
			throw new Error(`exobuild: cannot find vm-image/ above ${fileURLToPath(import.meta.url)}`);
		}

		dir = parent;
	}

	return dir;
})();

/** vm-image/: the agent and the builder image recipe. */
export const vmImageDir = path.join(packageRoot, 'vm-image');

/** exobuild's cache directory: $EXOBUILD_CACHE_DIR, else $XDG_CACHE_HOME/exobuild, else ~/.cache/exobuild. */
export const cacheDir = (env: NodeJS.ProcessEnv = process.env): string => {
	if (env['EXOBUILD_CACHE_DIR']) {
		return path.resolve(env['EXOBUILD_CACHE_DIR']);
	}

	const xdg = env['XDG_CACHE_HOME'];
	return path.join(xdg ? path.resolve(xdg) : path.join(os.homedir(), '.cache'), 'exobuild');
};

/** Builder image archives (OCI image archives named by input hash) and their metadata. */
export const builderImagesDir = (env?: NodeJS.ProcessEnv): string => path.join(cacheDir(env), 'builder-images');

/** Per-build state of running builds; each holds an owner record so orphans can be reaped. */
export const runsDir = (env?: NodeJS.ProcessEnv): string => path.join(cacheDir(env), 'runs');

/** Per-driver state (e.g. unpacked builder rootfs for linux-userns). */
export const runtimeStateDir = (driver: string, env?: NodeJS.ProcessEnv): string => path.join(cacheDir(env), driver);

/** Logs kept after a build (the engine daemon's log of each build, named by its session). */
export const logsDir = (env?: NodeJS.ProcessEnv): string => path.join(cacheDir(env), 'logs');
