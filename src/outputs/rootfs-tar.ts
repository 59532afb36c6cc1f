/**
 * An image's root filesystem as a tar stream, merged in tar space (no unpacking, so numeric
 * uid/gid, device nodes and hardlinks survive without root): layers are read top first; an entry
 * is written unless a higher layer already wrote its path, whited it out (`.wh.NAME`), made an
 * ancestor opaque (`.wh..wh..opq`) or put a non-folder at an ancestor. Whiteouts hide lower layers
 * only. A hardlink whose target a higher layer replaced or removed becomes a regular file holding
 * the target's content from its own layer (a second read of that layer).
 *
 * Extended attributes (PAX SCHILY.xattr.*, e.g. file capabilities) are not carried: node-tar
 * does not expose them.
 */
import path from 'node:path';
import * as tar from 'tar';
import type {Descriptor} from '../oci/schema.js';
import {tarEntries} from '../oci/tar-entries.js';
import {openLayer, type SelectedImage} from './images.js';

const block = 512;

/** A layer path relative to the root ('' is the root itself); undefined for paths that leave it. */
const clean = (name: string): string | undefined => {
	const normalised = path.posix.normalize(`/${name}`).replace(/\/+$/, '').replace(/^\/+/, '');
	return normalised.split('/').includes('..') ? undefined : normalised;
};

const ancestorsOf = (name: string): string[] => {
	if (name === '') {
		return [];
	}

	const parts = name.split('/');
	return parts.map((_part, depth) => parts.slice(0, depth).join('/'));
};

const fileTypes = new Set(['File', 'OldFile', 'ContiguousFile']);

interface Written {
	readonly layer: number;
	readonly dir: boolean;
}

type EntryType = tar.HeaderData['type'];

/** A header (preceded by a PAX header when ustar cannot hold a field). */
const headerBlocks = (fields: tar.HeaderData): Buffer[] => {
	const header = new tar.Header(fields);
	const needPax = header.encode();
	const blocks = [header.block!];
	if (needPax) {
		const {path: name, linkpath, size, uid, gid, uname, gname, mtime} = fields;
		blocks.unshift(new tar.Pax({path: name, linkpath, size, uid, gid, uname, gname, mtime}).encode());
	}

	return blocks;
};

const padding = (size: number): Buffer => Buffer.alloc((block - (size % block)) % block);

/** Copies an entry: header, content, padding. */
async function * copied(entry: tar.ReadEntry, name: string, overrides: {type?: EntryType; linkpath?: string} = {}): AsyncGenerator<Buffer> {
	const type = overrides.type ?? (fileTypes.has(entry.type) ? 'File' : entry.type === 'GNUDumpDir' ? 'Directory' : entry.type);
	const size = type === 'File' ? entry.size : 0;
	yield * headerBlocks({
		path: type === 'Directory' ? `${name}/` : name,
		type,
		mode: entry.mode,
		uid: entry.uid,
		gid: entry.gid,
		uname: entry.uname,
		gname: entry.gname,
		mtime: entry.mtime,
		size,
		linkpath: overrides.linkpath ?? (type === 'SymbolicLink' ? entry.linkpath : undefined),
		devmaj: entry.header.devmaj,
		devmin: entry.header.devmin,
	});
	if (type !== 'File') {
		entry.resume();
		return;
	}

	let seen = 0;
	for await (const chunk of entry as AsyncIterable<Buffer>) {
		seen += chunk.length;
		yield chunk;
	}

	if (seen !== size) {
		throw new Error(`${name}: the layer ended ${size - seen} bytes early`);
	}

	yield padding(size);
}

/** The merged root filesystem of `image` as tar blocks; `folder`, when given, prefixes every path (and gets its own entry). */
async function * imageEntries(layoutDir: string, image: SelectedImage, folder: string | undefined): AsyncGenerator<Buffer> {
	const outside = (name: string): string => (folder === undefined ? name : `${folder}/${name}`);
	const deleted = new Set<string>();
	const opaque = new Set<string>();
	const written = new Map<string, Written>();
	const hidden = (name: string): boolean => deleted.has(name) || ancestorsOf(name).some(ancestor => {
		const above = written.get(ancestor);
		return deleted.has(ancestor) || opaque.has(ancestor) || (above !== undefined && !above.dir);
	});

	if (folder !== undefined) {
		yield * headerBlocks({path: `${folder}/`, type: 'Directory', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: new Date(0)});
	}

	const layers: readonly Descriptor[] = image.manifest.layers;
	for (let level = layers.length - 1; level >= 0; level--) {
		const layer = layers[level]!;
		const newlyDeleted: string[] = [];
		const newlyOpaque: string[] = [];
		/** Hardlink target → links to it that need the target's content from this layer. */
		const orphanLinks = new Map<string, string[]>();
		for await (const entry of tarEntries(await openLayer(layoutDir, layer))) {
			const name = clean(entry.path);
			const base = name === undefined ? '' : path.posix.basename(name);
			if (name === undefined || base.startsWith('.wh.') || written.has(name) || hidden(name)) {
				if (name !== undefined && base === '.wh..wh..opq') {
					newlyOpaque.push(clean(path.posix.dirname(name))!);
				} else if (name !== undefined && base.startsWith('.wh.') && !base.startsWith('.wh..wh.')) {
					newlyDeleted.push(clean(path.posix.join(path.posix.dirname(name), base.slice(4)))!);
				}

				entry.resume();
				continue;
			}

			if (name === '') {
				written.set('', {layer: level, dir: true});
				if (folder === undefined) {
					yield * copied(entry, '.', {type: 'Directory'});
				} else {
					entry.resume();
				}

				continue;
			}

			if (entry.type === 'Link') {
				const target = clean(entry.linkpath ?? '');
				written.set(name, {layer: level, dir: false});
				if (target !== undefined && written.get(target)?.layer === level) {
					yield * copied(entry, outside(name), {linkpath: outside(target)});
				} else if (target !== undefined) {
					orphanLinks.set(target, [...(orphanLinks.get(target) ?? []), name]);
					entry.resume();
				} else {
					entry.resume();
				}

				continue;
			}

			written.set(name, {layer: level, dir: entry.type === 'Directory' || entry.type === 'GNUDumpDir'});
			yield * copied(entry, outside(name));
		}

		if (orphanLinks.size > 0) {
			for await (const entry of tarEntries(await openLayer(layoutDir, layer))) {
				const name = clean(entry.path);
				const links = name === undefined ? undefined : orphanLinks.get(name);
				if (links === undefined || !fileTypes.has(entry.type)) {
					entry.resume();
					continue;
				}

				orphanLinks.delete(name!);
				const [first, ...others] = links;
				yield * copied(entry, outside(first!));
				for (const other of others) {
					yield * headerBlocks({path: outside(other), type: 'Link', linkpath: outside(first!), mode: entry.mode, uid: entry.uid, gid: entry.gid, size: 0, mtime: entry.mtime});
				}
			}

			for (const [target, links] of orphanLinks) {
				if (written.has(target) && !hidden(target)) {
					for (const link of links) {
						yield * headerBlocks({path: outside(link), type: 'Link', linkpath: outside(target), size: 0, mode: 0o644});
					}
				}
			}
		}

		for (const name of newlyDeleted) {
			deleted.add(name);
		}

		for (const name of newlyOpaque) {
			opaque.add(name);
		}
	}
}

/**
 * The root filesystems of `images` as one tar stream: one image at the archive's root; several
 * under their buildx folders (linux_arm64/, linux_arm_v7/).
 */
export async function * rootfsTar(layoutDir: string, images: readonly SelectedImage[]): AsyncGenerator<Buffer> {
	for (const image of images) {
		yield * imageEntries(layoutDir, image, images.length === 1 ? undefined : image.folder);
	}

	yield Buffer.alloc(block * 2);
}
