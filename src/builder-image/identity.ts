/**
 * What names a builder image. There are two recipes:
 * - `distro`: Debian packages only (vm-image/make-builder-rootfs.sh, mmdebstrap), made on Linux;
 * - `containerfile`: Containerfile.builder (Ubuntu + tonistiigi/binfmt + BuildKit), made with
 *   `container build` on macOS, or loaded from an archive anywhere.
 * Each is named by a hash of its inputs, so a changed recipe or agent means a new image; the
 * image carries the kind and the hash as labels, and is tagged exobuild-builder:KIND-HASH12.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {packageRoot, vmImageDir} from '../paths.js';
import {recipeHashes} from './recipe.js';

export const builderKinds = ['containerfile', 'distro'] as const;
export type BuilderKind = typeof builderKinds[number];

export const builderLabels = {
	kind: 'dev.exobuild.builder-kind',
	inputHash: 'dev.exobuild.input-hash',
} as const;

export const builderRepository = 'exobuild-builder';

export const containerfilePath = path.join(packageRoot, 'Containerfile.builder');

/** exobuild-builder:KIND-HASH12: the tag in a runtime's image store and in the archive. */
export const builderReference = (kind: BuilderKind, inputHash: string): string => `${builderRepository}:${kind}-${inputHash.slice(0, 12)}`;

const filesUnder = async (dir: string): Promise<string[]> => {
	const entries = await fs.readdir(dir, {withFileTypes: true, recursive: true});
	return entries.filter(entry => entry.isFile()).map(entry => path.relative(dir, path.join(entry.parentPath, entry.name))).sort();
};

/** Hash of Containerfile.builder and every file in vm-image/ (path and content). */
export const containerfileHash = async (): Promise<string> => {
	const hash = crypto.createHash('sha256');
	const add = (name: string, data: Buffer): void => {
		hash.update(`${name}\0${data.length}\0`);
		hash.update(data);
	};

	add('Containerfile.builder', await fs.readFile(containerfilePath));
	for (const file of await filesUnder(vmImageDir)) {
		// eslint-disable-next-line no-await-in-loop
		add(`vm-image/${file}`, await fs.readFile(path.join(vmImageDir, file)));
	}

	return hash.digest('hex');
};

/** The input hash each recipe has in this checkout: a stored image with another hash is stale. */
export const currentInputHashes = async (suites?: readonly string[]): Promise<Record<BuilderKind, string>> => ({
	containerfile: await containerfileHash(),
	distro: (await recipeHashes(suites)).inputHash,
});
