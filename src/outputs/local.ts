/**
 * `--output type=local,dest=DIR`: the image's root filesystem as files, written as buildx does.
 * One platform: DIR is the root filesystem; several: DIR/linux_arm64/, DIR/linux_arm_v7/…
 * (buildx's names).
 *
 * The whole tree is first made in a private staging folder (mode 0700, a partial output beside
 * DIR, or inside DIR when DIR is a mount point, so it is on DIR's filesystem): layers are applied
 * there by src/oci/layer-apply.ts, resolved beneath the staging root. Any error (a full disk, a
 * refused layer, a signal) removes the staging folder and leaves DIR untouched. Only then is the
 * tree merged into DIR (./merge-tree.ts): a path the image has replaces the same path in DIR
 * (a symlink there is removed, never followed), and nothing else in DIR is removed, so
 * `-o .` keeps the project. A DIR that does not exist is the staging folder renamed.
 *
 * Files land owned by the invoking user with setuid/setgid bits cleared, and device nodes and
 * FIFOs are skipped; keepOwners (`keep-owners=true`, root only) keeps the image's owners and
 * modes.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {UserError} from '../errors.js';
import {blobPath} from '../oci/layout.js';
import {applyLayer} from '../oci/layer-apply.js';
import {lstatOrUndefined} from '../oci/in-root.js';
import {partialPathOf, trackPartial} from '../runs/partials.js';
import {layerCompression, outputErrorCode, selectImages, verifyLayers, type SelectedImage} from './images.js';
import {mergeTree} from './merge-tree.js';
import {keepOwnersNeedsRoot} from './target.js';

export const outputNoSpaceCode = 'E_NO_SPACE';
export const outputWriteCode = 'E_OUTPUT_WRITE';

export interface LocalOutputOptions {
	/** Platform ids to write (default: every image in the layout); more than one → a folder per platform. */
	readonly platforms?: readonly string[];
	/** Keep the image's owners and setuid/setgid bits (keep-owners=true). Root only. */
	readonly keepOwners?: boolean;
	/** Stops the output between entries; the staging folder is removed and DIR left as it was. */
	readonly signal?: AbortSignal;
}

const unpackImage = async (layoutDir: string, image: SelectedImage, root: string, options: LocalOutputOptions): Promise<void> => {
	const keep = options.keepOwners === true;
	for (const layer of image.manifest.layers) {
		const file = blobPath(layoutDir, layer.digest);
		await layerCompression(layoutDir, layer); // refuses zstd with a UserError
		await applyLayer(file, root, {keepOwners: keep, keepSetuid: keep, ...(options.signal === undefined ? {} : {signal: options.signal})});
	}
};

/** A write error of the output as a UserError naming DIR (exit 1); anything else as it is. */
const asOutputError = (error: unknown, destDir: string, untouched: boolean): unknown => {
	const left = untouched ? `${destDir} was left as it was` : `${destDir} may be partly updated`;
	const code = (error as NodeJS.ErrnoException | undefined)?.code;
	if (code === 'ENOSPC' || code === 'EDQUOT') {
		return new UserError(`no space left to write ${destDir} (${code})`, {
			hint: `free space on the filesystem of ${path.dirname(destDir)}, or choose another dest; ${left}`,
			code: outputNoSpaceCode,
			exitCode: 1,
			cause: error,
		});
	}

	if (code === 'EIO' || code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
		return new UserError(`cannot write ${destDir}: ${(error as Error).message}`, {
			hint: `choose a dest you can write to; ${left}`,
			code: outputWriteCode,
			exitCode: 1,
			cause: error,
		});
	}

	return error;
};

/** Where to stage: beside DIR (same filesystem), or inside DIR when DIR is a mount point of its own. */
const stagingPathOf = async (destDir: string): Promise<string> => {
	const dest = await lstatOrUndefined(destDir);
	const parent = await fs.stat(path.dirname(destDir));
	return dest !== undefined && dest.dev !== parent.dev ? partialPathOf(path.join(destDir, 'exobuild-output')) : partialPathOf(destDir);
};

export const writeLocalOutput = async (layoutDir: string, destDirArg: string, options: LocalOutputOptions = {}): Promise<void> => {
	if (options.keepOwners === true && process.getuid?.() !== 0) {
		throw new UserError(keepOwnersNeedsRoot, {hint: 'drop keep-owners=true (files then belong to you), or run as root', code: outputErrorCode, exitCode: 2});
	}

	const images = await selectImages(layoutDir, options.platforms);
	await verifyLayers(layoutDir, images);

	// DIR itself is the user's choice: a symlink to a folder is written through (its target is DIR).
	let destDir = path.resolve(destDirArg);
	const existing = await fs.stat(destDir).catch(() => undefined);
	if (existing === undefined && (await lstatOrUndefined(destDir))?.isSymbolicLink()) {
		throw new UserError(`${destDir} is a symlink to nothing`, {hint: 'make the folder it names first, or choose another dest', code: outputErrorCode, exitCode: 2});
	}

	if (existing !== undefined && !existing.isDirectory()) {
		throw new UserError(`${destDir} exists and is not a folder`, {hint: 'choose another dest, or remove it', code: outputErrorCode, exitCode: 2});
	}

	if (existing === undefined) {
		await fs.mkdir(path.dirname(destDir), {recursive: true});
	} else {
		destDir = await fs.realpath(destDir);
	}

	const partial = await trackPartial(await stagingPathOf(destDir));
	try {
		await fs.mkdir(partial.path, {mode: 0o700});
		try {
			if (images.length === 1) {
				await unpackImage(layoutDir, images[0]!, partial.path, options);
			} else {
				for (const image of images) {
					const root = path.join(partial.path, image.folder);
					await fs.mkdir(root, {mode: 0o700});
					await fs.chmod(root, 0o755);
					await unpackImage(layoutDir, image, root, options);
				}
			}
		} catch (error) {
			throw asOutputError(error, destDir, true);
		}

		options.signal?.throwIfAborted();
		if (existing === undefined) {
			try {
				await fs.chmod(partial.path, 0o755);
				await fs.rename(partial.path, destDir);
				await partial.release();
				return;
			} catch (error) {
				// Another run made DIR in the meantime: merge into it like into any existing folder.
				if (!['EEXIST', 'ENOTEMPTY', 'EISDIR'].includes((error as NodeJS.ErrnoException).code ?? '')) {
					throw error;
				}
			}
		}

		await mergeTree(partial.path, destDir, {keepOwners: options.keepOwners === true, ...(options.signal === undefined ? {} : {signal: options.signal})}).catch((error: unknown) => {
			throw asOutputError(error, destDir, false);
		});
	} finally {
		await partial.discard();
	}
};
