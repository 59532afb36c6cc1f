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
import {exobuildVersion} from '../agent/agent-version.js';
import {packageRoot, vmImageDir} from '../paths.js';
import {recipeHashes} from './recipe.js';
import {toolNames, toolRefSchema, type BuilderTools} from './upstream-tools.js';

export const builderKinds = ['containerfile', 'distro'] as const;
export type BuilderKind = typeof builderKinds[number];

export const builderLabels = {
	kind: 'dev.exobuild.builder-kind',
	inputHash: 'dev.exobuild.input-hash',
	/** Distro builders: the recipe's hash (the input hash without the upstream tools). */
	recipeHash: 'dev.exobuild.recipe-hash',
	/** Distro builders with upstream tools: dev.exobuild.buildkit.version, dev.exobuild.buildkit.sha256, and the same for binfmt. */
	toolPrefix: 'dev.exobuild.',
} as const;

/** The labels that record a distro builder's upstream tools. */
export const toolLabels = (tools: BuilderTools): Record<string, string> => Object.fromEntries(toolNames.flatMap(name => {
	const ref = tools[name];
	return ref === undefined ? [] : [[`${builderLabels.toolPrefix}${name}.version`, ref.version], [`${builderLabels.toolPrefix}${name}.sha256`, ref.sha256]];
}));

/** The upstream tools an image's labels record; a half or malformed record is an error (the label names it). */
export const toolsFromLabels = (labels: Readonly<Record<string, string>>): BuilderTools | string => {
	const tools: BuilderTools = {};
	for (const name of toolNames) {
		const version = labels[`${builderLabels.toolPrefix}${name}.version`];
		const sha256 = labels[`${builderLabels.toolPrefix}${name}.sha256`];
		if (version === undefined && sha256 === undefined) {
			continue;
		}

		const parsed = toolRefSchema.safeParse({version, sha256});
		if (!parsed.success) {
			return `its ${builderLabels.toolPrefix}${name}.* labels are not a version and a SHA-256`;
		}

		tools[name] = parsed.data;
	}

	return tools;
};

export const builderRepository = 'exobuild-builder';

export const containerfilePath = path.join(packageRoot, 'Containerfile.builder');

/** exobuild-builder:KIND-HASH12: the tag in a driver's image store and in the archive. */
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

	add('exobuild version', Buffer.from(exobuildVersion));
	add('Containerfile.builder', await fs.readFile(containerfilePath));
	for (const file of await filesUnder(vmImageDir)) {
		add(`vm-image/${file}`, await fs.readFile(path.join(vmImageDir, file)));
	}

	return hash.digest('hex');
};

/**
 * The recipe hash each recipe has in this checkout: a stored image of another recipe is stale.
 * A containerfile builder's input hash is its recipe hash; a distro builder records its recipe
 * hash apart from its input hash, which also names the upstream tools it carries.
 */
export const currentRecipeHashes = async (suites?: readonly string[]): Promise<Record<BuilderKind, string>> => ({
	containerfile: await containerfileHash(),
	distro: (await recipeHashes(suites)).recipeHash,
});

/** @deprecated the same as currentRecipeHashes (kept for callers written before distro builders carried tools). */
export const currentInputHashes = currentRecipeHashes;
