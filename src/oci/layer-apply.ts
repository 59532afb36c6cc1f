/**
 * Applying one image layer (a tar, gzipped or not) on top of a root folder on the host, with no
 * more power than the sandbox that made it had. One pass over the entries, in order:
 *
 * - Names: a leading `/` or `./` is stripped; a name with a `..` component is refused.
 * - Parents are resolved beneath the root (./in-root.ts): a symlink on the way is followed only
 *   within the root, chroot-like; missing parent folders are made (0755).
 * - Whiteouts (`.wh.NAME`, `.wh..wh..opq`) are applied at the resolved place and hide lower
 *   layers only: NAME itself is removed, never followed (a symlink is removed as a link), and an
 *   opaque folder keeps what this layer put in it.
 * - Files, folders and symlinks replace what is at their path without following it (a symlink
 *   there is removed, never written through); files are created exclusively, without following.
 *   A symlink's target is data: it is recorded exactly as the layer has it.
 * - Hardlinks only to a file already inside the root (resolved the same way); a hardlink to a
 *   symlink becomes a copy of that symlink; to anything else, or to nothing, is refused.
 * - Device nodes and FIFOs are skipped (as an unprivileged unpacker must); whatever the lower
 *   layers had at their path is removed.
 * - Owners are not applied (files belong to the caller) and setuid/setgid bits are cleared,
 *   unless the caller asks for them (keepOwners: root only; keepSetuid). When not root, every
 *   folder keeps its owner's rwx bits so that later layers can write into it.
 *
 * Any error (a refused entry, ENOSPC, EIO, a short write, a corrupt or truncated tar) fails the
 * whole apply; the caller throws the half-applied root away. The abort signal is checked between
 * entries and between chunks of a file.
 */
import fs from 'node:fs/promises';
import {constants as fsConstants, type Stats} from 'node:fs';
import path from 'node:path';
import type * as tar from 'tar';
import {UserError} from '../errors.js';
import {removeTree} from '../fs/remove-tree.js';
import {entryComponents, isRealFolder, lstatOrUndefined, PathResolutionError, resolveFolder} from './in-root.js';
import {openTarFile, tarEntries} from './tar-entries.js';

export const layerRefusedCode = 'E_LAYER_REFUSED';

export interface ApplyLayerOptions {
	/** Apply the layer's uid/gid to what it creates. Only when running as root. */
	readonly keepOwners?: boolean;
	/** Keep setuid/setgid bits (default: cleared). */
	readonly keepSetuid?: boolean;
	/** Stops the apply between entries (and between chunks of a file). */
	readonly signal?: AbortSignal;
}

const runningAsRoot = (): boolean => process.getuid?.() === 0;

const fileTypes = new Set(['File', 'OldFile', 'ContiguousFile']);
const directoryTypes = new Set(['Directory', 'GNUDumpDir']);
const skippedTypes = new Set(['CharacterDevice', 'BlockDevice', 'FIFO']);
const opaqueMarker = '.wh..wh..opq';
const whiteoutPrefix = '.wh.';
const writeFlags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

interface FolderMetadata {
	readonly parts: string[];
	readonly mode: number;
	readonly uid: number | undefined;
	readonly gid: number | undefined;
	readonly mtime: Date | undefined;
}

/** Writes all of `chunk` (a short write is continued, never ignored). */
const writeAll = async (handle: fs.FileHandle, chunk: Buffer): Promise<void> => {
	let offset = 0;
	while (offset < chunk.length) {
		const {bytesWritten} = await handle.write(chunk, offset, chunk.length - offset);
		if (bytesWritten <= 0) {
			throw new Error('a write wrote nothing');
		}

		offset += bytesWritten;
	}
};

/** Removes what is at `file` (described by `stat`) without following it. */
const removeExisting = async (file: string, stat: Stats): Promise<void> => {
	await (stat.isDirectory() ? removeTree(file) : fs.unlink(file));
};

class LayerApplier {
	/** Resolved paths (joined with /) this layer wrote, with their ancestors: whiteouts leave them. */
	private readonly touched = new Set<string>();
	/** Folder entries: their modes, owners and times are applied once the layer is in. */
	private readonly folders: FolderMetadata[] = [];
	/** Parent resolutions (entry parent → resolved parts), valid until something is removed. */
	private readonly resolutions = new Map<string, string[]>();
	private readonly asRoot = runningAsRoot();

	constructor(private readonly layer: string, private readonly root: string, private readonly options: ApplyLayerOptions) {}

	async apply(): Promise<void> {
		for await (const entry of tarEntries(await openTarFile(this.layer), this.options.signal)) {
			await this.entry(entry);
		}

		for (const folder of this.folders) {
			this.options.signal?.throwIfAborted();
			// A later entry of this layer may have replaced the folder or one of its parents: then it is not there to set.
			if (!await isRealFolder(this.root, folder.parts)) {
				continue;
			}

			const file = path.join(this.root, ...folder.parts);
			if (this.options.keepOwners && folder.uid !== undefined && folder.gid !== undefined) {
				await fs.lchown(file, folder.uid, folder.gid);
			}

			await fs.chmod(file, folder.mode);
			if (folder.mtime !== undefined) {
				await fs.utimes(file, folder.mtime, folder.mtime);
			}
		}
	}

	private refuse(name: string, why: string): UserError {
		return new UserError(`layer ${path.basename(this.layer)}: entry "${name}" ${why}`, {
			hint: 'the image (or its base) holds a layer that exobuild will not apply on the host; rebuild it from a trusted base',
			code: layerRefusedCode,
			exitCode: 1,
		});
	}

	private modeOf(mode: number | undefined, folder: boolean): number {
		let result = (mode ?? (folder ? 0o755 : 0o644)) & 0o7777;
		if (!this.options.keepSetuid) {
			result &= ~0o6000;
		}

		if (folder && !this.asRoot) {
			result |= 0o700;
		}

		return result;
	}

	private markTouched(parts: readonly string[]): void {
		for (let depth = 1; depth <= parts.length; depth++) {
			this.touched.add(parts.slice(0, depth).join('/'));
		}
	}

	private async resolveParent(name: string, parts: readonly string[], create: boolean): Promise<string[] | undefined> {
		const key = parts.join('/');
		const known = this.resolutions.get(key);
		if (known !== undefined) {
			return known;
		}

		try {
			const resolved = await resolveFolder(this.root, parts, create);
			if (resolved !== undefined) {
				this.resolutions.set(key, resolved);
			}

			return resolved;
		} catch (error) {
			if (error instanceof PathResolutionError) {
				throw this.refuse(name, `cannot be placed: ${error.message}`);
			}

			throw error;
		}
	}

	/** Removes what is at `file` (not followed); parent resolutions made before may be stale after. */
	private async remove(file: string, stat: Stats): Promise<void> {
		this.resolutions.clear();
		await removeExisting(file, stat);
	}

	/** Removes the lower layers' content under the real folder `parts`: what this layer wrote stays. */
	private async clearLower(parts: readonly string[]): Promise<void> {
		const folder = path.join(this.root, ...parts);
		for (const name of await fs.readdir(folder)) {
			const child = [...parts, name];
			const file = path.join(folder, name);
			const stat = await fs.lstat(file);
			if (!this.touched.has(child.join('/'))) {
				await this.remove(file, stat);
			} else if (stat.isDirectory()) {
				await this.clearLower(child);
			}
		}
	}

	private async whiteout(name: string, parentParts: readonly string[], base: string): Promise<void> {
		const parent = await this.resolveParent(name, parentParts, false);
		if (parent === undefined) {
			return; // nothing below to hide
		}

		if (base === opaqueMarker) {
			await this.clearLower(parent);
			return;
		}

		const hidden = base.slice(whiteoutPrefix.length);
		if (hidden.startsWith(whiteoutPrefix)) {
			return; // other aufs metadata (.wh..wh.plnk, .wh..wh.aufs): nothing to apply
		}

		if (hidden === '' || hidden === '.' || hidden === '..') {
			throw this.refuse(name, 'is a whiteout of no name');
		}

		const target = [...parent, hidden];
		const file = path.join(this.root, ...target);
		const stat = await lstatOrUndefined(file);
		if (stat === undefined) {
			return;
		}

		if (!this.touched.has(target.join('/'))) {
			await this.remove(file, stat);
		} else if (stat.isDirectory()) {
			await this.clearLower(target);
		}
	}

	private async writeFile(entry: tar.ReadEntry, file: string): Promise<void> {
		const handle = await fs.open(file, writeFlags, 0o600);
		try {
			let written = 0;
			for await (const chunk of entry as AsyncIterable<Buffer>) {
				this.options.signal?.throwIfAborted();
				await writeAll(handle, chunk);
				written += chunk.length;
			}

			if (written !== entry.size) {
				throw new Error(`${entry.path}: the layer ended ${entry.size - written} bytes early`);
			}

			if (this.options.keepOwners && entry.uid !== undefined && entry.gid !== undefined) {
				await handle.chown(entry.uid, entry.gid);
			}

			await handle.chmod(this.modeOf(entry.mode, false));
			if (entry.mtime !== undefined) {
				await handle.utimes(entry.atime ?? entry.mtime, entry.mtime);
			}
		} catch (error) {
			await handle.close().catch(() => undefined);
			throw error;
		}

		await handle.close();
	}

	private async symlink(target: string, file: string, uid: number | undefined, gid: number | undefined, mtime: Date | undefined): Promise<void> {
		await fs.symlink(target, file);
		if (this.options.keepOwners && uid !== undefined && gid !== undefined) {
			await fs.lchown(file, uid, gid);
		}

		if (mtime !== undefined) {
			await fs.lutimes(file, mtime, mtime);
		}
	}

	private async hardlink(entry: tar.ReadEntry, name: string, file: string): Promise<void> {
		const targetParts = entryComponents(entry.linkpath ?? '');
		if (targetParts === undefined || targetParts.length === 0) {
			throw this.refuse(name, `is a hardlink to "${entry.linkpath ?? ''}", which is not a file inside the image`);
		}

		const targetParent = await this.resolveParent(name, targetParts.slice(0, -1), false);
		const target = targetParent === undefined ? undefined : path.join(this.root, ...targetParent, targetParts.at(-1)!);
		const stat = target === undefined ? undefined : await lstatOrUndefined(target);
		if (target === undefined || stat === undefined || !(stat.isFile() || stat.isSymbolicLink())) {
			throw this.refuse(name, `is a hardlink to "${entry.linkpath ?? ''}", which is ${stat === undefined ? 'not in the image' : 'not a file'}`);
		}

		if (target === file) {
			return;
		}

		const existing = await lstatOrUndefined(file);
		if (existing !== undefined) {
			await this.remove(file, existing);
		}

		if (stat.isSymbolicLink()) {
			await this.symlink(await fs.readlink(target), file, entry.uid, entry.gid, entry.mtime);
		} else {
			await fs.link(target, file);
		}
	}

	private async entry(entry: tar.ReadEntry): Promise<void> {
		const name = entry.path;
		const parts = entryComponents(name);
		if (parts === undefined) {
			entry.resume();
			throw this.refuse(name, 'has a ".." component');
		}

		if (parts.length === 0) {
			entry.resume();
			if (!directoryTypes.has(entry.type)) {
				throw this.refuse(name, `is the root, as a ${entry.type}`);
			}

			return; // the root folder itself: its metadata is the caller's
		}

		const base = parts.at(-1)!;
		const parentParts = parts.slice(0, -1);
		if (base.startsWith(whiteoutPrefix)) {
			entry.resume();
			await this.whiteout(name, parentParts, base);
			return;
		}

		const isFolder = directoryTypes.has(entry.type);
		const known = isFolder || fileTypes.has(entry.type) || skippedTypes.has(entry.type) || entry.type === 'SymbolicLink' || entry.type === 'Link';
		if (!known) {
			entry.resume();
			throw this.refuse(name, `has an unsupported type (${entry.type})`);
		}

		const parent = await this.resolveParent(name, parentParts, true);
		const resolved = [...parent!, base];
		const file = path.join(this.root, ...resolved);
		if (entry.type === 'Link') {
			entry.resume();
			await this.hardlink(entry, name, file);
			this.markTouched(resolved);
			return;
		}

		const existing = await lstatOrUndefined(file);
		if (existing !== undefined && !(isFolder && existing.isDirectory())) {
			await this.remove(file, existing);
		}

		if (isFolder) {
			entry.resume();
			if (existing === undefined || !existing.isDirectory()) {
				await fs.mkdir(file, {mode: 0o700});
			}

			this.folders.push({parts: resolved, mode: this.modeOf(entry.mode, true), uid: entry.uid, gid: entry.gid, mtime: entry.mtime});
		} else if (entry.type === 'SymbolicLink') {
			entry.resume();
			await this.symlink(entry.linkpath ?? '', file, entry.uid, entry.gid, entry.mtime);
		} else if (skippedTypes.has(entry.type)) {
			entry.resume();
		} else {
			await this.writeFile(entry, file);
		}

		this.markTouched(resolved);
	}
}

/**
 * Applies the layer `layer` (a tar file, gzipped or not) on top of the folder `root`, as
 * described at the top of this file.
 */
export const applyLayer = async (layer: string, root: string, options: ApplyLayerOptions = {}): Promise<void> => {
	if (options.keepOwners && !runningAsRoot()) {
		throw new Error('internal: keeping owners needs root');
	}

	await new LayerApplier(layer, path.resolve(root), options).apply();
};
