/**
 * Unpacking an image from an OCI image archive into a root filesystem: layers in order, with OCI
 * whiteouts honoured (`.wh.NAME` removes NAME of lower layers, `.wh..wh..opq` empties its
 * folder of lower layers' content), ownership and modes preserved.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import * as tar from 'tar';
import {dir as temporaryDirectory} from 'tmp-promise';
import {blobPath, imagesUnder, readIndexJson} from './layout.js';
import {fileDigest} from './writer.js';
import {hostPlatform} from '../platforms/parse.js';
import {platformIdOf} from './schema.js';


/** The whiteouts of a layer: paths to delete and folders to make opaque. */
const scanWhiteouts = async (layer: string): Promise<{deleted: string[]; opaque: string[]}> => {
	const deleted: string[] = [];
	const opaque: string[] = [];
	await tar.t({
		file: layer,
		onReadEntry(entry) {
			const name = entry.path.replace(/^\.?\//, '');
			const base = path.posix.basename(name);
			if (base === '.wh..wh..opq') {
				opaque.push(path.posix.dirname(name));
			} else if (base.startsWith('.wh.')) {
				deleted.push(path.posix.join(path.posix.dirname(name), base.slice(4)));
			}
		},
	});
	return {deleted, opaque};
};

/** Resolves a path inside `root` without following symlinks out of it (the last component is not followed). */
const inside = (root: string, relative: string): string => {
	const joined = path.resolve(root, relative);
	if (joined !== root && !joined.startsWith(`${root}${path.sep}`)) {
		throw new Error(`layer path escapes the root: ${relative}`);
	}

	return joined;
};

/**
 * node-tar, guarding against archives that write outside their folder, strips the leading `/`
 * of absolute symlink targets and drops symlinks whose target leaves the folder or passes
 * through another symlink; in a root filesystem those are ordinary (`/bin/sh → /usr/bin/dash`,
 * `/lib → usr/lib` then `…/libc.so → /lib/…`). So each layer's symlinks are recreated
 * afterwards exactly as recorded, and only where their own parent folders are real folders
 * inside the root (never through a symlink).
 */
interface Symlink {
	readonly name: string;
	readonly target: string;
	readonly uid: number | undefined;
	readonly gid: number | undefined;
	readonly mtime: Date | undefined;
}

const symlinksOf = async (layer: string): Promise<Symlink[]> => {
	const found = new Map<string, Symlink>();
	await tar.t({
		file: layer,
		maxDecompressionRatio: Number.POSITIVE_INFINITY,
		onReadEntry(entry) {
			const name = path.posix.normalize(`/${entry.path}`).replace(/^\/+|\/+$/g, '');
			if (entry.type === 'SymbolicLink' && entry.linkpath !== undefined && name !== '' && !name.split('/').includes('..')) {
				found.set(name, {name, target: entry.linkpath, uid: entry.uid, gid: entry.gid, mtime: entry.mtime});
			} else {
				found.delete(name);
			}
		},
	});
	return [...found.values()];
};

/** Whether every folder from `root` down to `name`'s parent is a real folder (no symlink on the way). */
const parentIsReal = async (root: string, name: string): Promise<boolean> => {
	let folder = root;
	for (const part of name.split('/').slice(0, -1)) {
		folder = path.join(folder, part);
		// eslint-disable-next-line no-await-in-loop
		const stat = await fs.lstat(folder).catch(() => undefined);
		if (stat === undefined || !stat.isDirectory()) {
			return false;
		}
	}

	return true;
};

const restoreSymlinks = async (layer: string, root: string): Promise<void> => {
	const asRoot = process.getuid?.() === 0;
	for (const link of await symlinksOf(layer)) {
		// eslint-disable-next-line no-await-in-loop
		if (!await parentIsReal(root, link.name)) {
			continue;
		}

		const file = path.join(root, link.name);
		// eslint-disable-next-line no-await-in-loop
		const current = await fs.lstat(file).catch(() => undefined);
		// eslint-disable-next-line no-await-in-loop
		if (current?.isSymbolicLink() && await fs.readlink(file) === link.target) {
			continue;
		}

		// eslint-disable-next-line no-await-in-loop
		await fs.rm(file, {recursive: true, force: true});
		// eslint-disable-next-line no-await-in-loop
		await fs.symlink(link.target, file);
		if (asRoot && link.uid !== undefined && link.gid !== undefined) {
			// eslint-disable-next-line no-await-in-loop
			await fs.lchown(file, link.uid, link.gid);
		}

		if (link.mtime !== undefined) {
			// eslint-disable-next-line no-await-in-loop
			await fs.lutimes(file, link.mtime, link.mtime).catch(() => undefined);
		}
	}
};

/** Applies one layer (a tar, gzipped or not) on top of `root`. */
export const applyLayer = async (layer: string, root: string): Promise<void> => {
	const {deleted, opaque} = await scanWhiteouts(layer);
	for (const relative of deleted) {
		// eslint-disable-next-line no-await-in-loop
		await fs.rm(inside(root, relative), {recursive: true, force: true});
	}

	for (const relative of opaque) {
		const folder = inside(root, relative);
		// eslint-disable-next-line no-await-in-loop
		const children = await fs.readdir(folder).catch(() => [] as string[]);
		for (const child of children) {
			// eslint-disable-next-line no-await-in-loop
			await fs.rm(path.join(folder, child), {recursive: true, force: true});
		}
	}

	await tar.x({
		file: layer,
		cwd: root,
		preserveOwner: process.getuid?.() === 0,
		chmod: true,
		processUmask: 0,
		unlink: true,
		maxDecompressionRatio: Number.POSITIVE_INFINITY,
		filter: name => !path.posix.basename(name).startsWith('.wh.'),
	});
	await restoreSymlinks(layer, root);
};

/**
 * Unpacks the image of an OCI image archive into `destDir` (created). The archive holds one
 * image, or an index from which the host architecture's image is taken.
 */
export const unpackImageArchive = async (archivePath: string, destDir: string): Promise<void> => {
	const staging = await temporaryDirectory({unsafeCleanup: true, tmpdir: path.dirname(destDir), prefix: '.oci-archive-'});
	try {
		await tar.x({file: archivePath, cwd: staging.path});
		const index = await readIndexJson(staging.path);
		const images = (await Promise.all(index.manifests.map(async descriptor => imagesUnder(staging.path, descriptor)))).flat();
		const wanted = hostPlatform()?.id ?? `linux/${process.arch}`;
		const image = images.length === 1 ? images[0] : images.find(candidate => platformIdOf(candidate.config) === wanted || candidate.platform === wanted);
		if (image === undefined) {
			throw new Error(`${archivePath} has no image for ${wanted} (it has ${images.map(i => i.platform).join(', ') || 'none'})`);
		}

		await fs.mkdir(destDir, {recursive: true});
		for (const layer of image.manifest.layers) {
			// eslint-disable-next-line no-await-in-loop
			const actual = await fileDigest(blobPath(staging.path, layer.digest));
			if (actual !== layer.digest) {
				throw new Error(`${archivePath}: layer ${layer.digest} is corrupt (its content hashes to ${actual})`);
			}

			// eslint-disable-next-line no-await-in-loop
			await applyLayer(blobPath(staging.path, layer.digest), destDir);
		}
	} finally {
		await staging.cleanup();
	}
};

