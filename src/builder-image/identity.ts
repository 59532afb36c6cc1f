/**
 * What names a builder image. There are two recipes:
 * - `distro`: Debian packages only (vm-image/make-builder-rootfs.sh, mmdebstrap), made on Linux;
 * - `containerfile`: Containerfile.builder (Ubuntu + tonistiigi/binfmt + BuildKit), made with
 *   `container build` on macOS, with BuildKit in a linux-userns sandbox on Linux (there from
 *   stand-ins of its pinned images, `--base-image`), or loaded from an archive anywhere.
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
	/**
	 * Containerfile builders made with `--base-image` (stand-ins for the pinned upstream images):
	 * `NAME@sha256:TOP,…`, each overridden base and the digest of the OCI layout that served it.
	 * A builder without it was made from the pins.
	 */
	baseOverrides: 'dev.exobuild.base-overrides',
} as const;

const overrideEntry = /^([a-z][a-z0-9_]*)@(sha256:[a-f0-9]{64})$/;

/** The label value recording overridden bases (name → digest of what served it), in name order. */
export const baseOverridesLabel = (overrides: Readonly<Record<string, string>>): string =>
	Object.entries(overrides).sort(([a], [b]) => a.localeCompare(b)).map(([name, digest]) => `${name}@${digest}`).join(',');

/** The overridden bases a label value records, or a sentence saying why it is malformed. */
export const baseOverridesFromLabel = (value: string): Record<string, string> | string => {
	const overrides: Record<string, string> = {};
	for (const entry of value.split(',')) {
		const match = overrideEntry.exec(entry);
		if (match === null || overrides[match[1]!] !== undefined) {
			return `its ${builderLabels.baseOverrides} label is not a list of NAME@sha256:DIGEST`;
		}

		overrides[match[1]!] = match[2]!;
	}

	return overrides;
};

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

/** One upstream image Containerfile.builder pins: `ARG <NAME>_IMAGE=<reference>`. */
export interface ContainerfileBase {
	/** Lower-case NAME, as `--base-image NAME=…` names it (ubuntu, binfmt, buildkit). */
	readonly name: string;
	/** The build arg, e.g. UBUNTU_IMAGE. */
	readonly arg: string;
	/** The pinned reference (its default). */
	readonly pinned: string;
}

/** The bases a Containerfile pins, from its `ARG <NAME>_IMAGE=<reference>` lines: the one place their names come from. */
export const containerfileBases = (text: string): ContainerfileBase[] =>
	[...text.matchAll(/^ARG[ \t]+(([A-Z][A-Z0-9_]*)_IMAGE)=(\S+)[ \t]*$/gm)].map(match => ({name: match[2]!.toLowerCase(), arg: match[1]!, pinned: match[3]!}));

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
