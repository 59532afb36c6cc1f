/**
 * Crafted tar files for hostile-layer tests: headers written directly (node-tar's Header and
 * Pax encoders), so names and types node-tar's packer would refuse or rewrite (`../x`,
 * absolute names, hardlinks out, device nodes, whiteouts) are written exactly as given.
 */
import fs from 'node:fs';
import * as tar from 'tar';

export interface CraftedEntry {
	readonly path: string;
	/** Default: File, or Directory when the path ends with `/`. */
	readonly type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'CharacterDevice' | 'BlockDevice' | 'FIFO';
	readonly content?: string | Buffer;
	readonly linkpath?: string;
	readonly mode?: number;
	readonly uid?: number;
	readonly gid?: number;
	readonly devmaj?: number;
	readonly devmin?: number;
}

const block = 512;

const headerBlocks = (fields: tar.HeaderData): Buffer[] => {
	const header = new tar.Header(fields);
	const needPax = header.encode();
	const blocks = [header.block!];
	if (needPax) {
		blocks.unshift(new tar.Pax({path: fields.path, linkpath: fields.linkpath, size: fields.size, mtime: fields.mtime}).encode());
	}

	return blocks;
};

/** The bytes of an uncompressed tar holding `entries` in this order. */
export const tarBytes = (entries: readonly CraftedEntry[]): Buffer => {
	const blocks: Buffer[] = [];
	for (const entry of entries) {
		const type = entry.type ?? (entry.path.endsWith('/') ? 'Directory' : 'File');
		const content = type === 'File' ? Buffer.from(entry.content ?? '') : Buffer.alloc(0);
		blocks.push(...headerBlocks({
			path: entry.path,
			type,
			mode: entry.mode ?? (type === 'Directory' ? 0o755 : 0o644),
			uid: entry.uid ?? 0,
			gid: entry.gid ?? 0,
			size: content.length,
			mtime: new Date(1_000_000_000_000),
			...(entry.linkpath === undefined ? {} : {linkpath: entry.linkpath}),
			...(entry.devmaj === undefined ? {} : {devmaj: entry.devmaj, devmin: entry.devmin ?? 0}),
		}));
		if (content.length > 0) {
			blocks.push(content, Buffer.alloc((block - (content.length % block)) % block));
		}
	}

	blocks.push(Buffer.alloc(block * 2));
	return Buffer.concat(blocks);
};

/** Writes a crafted tar to `file` and returns `file`. */
export const craftTar = (file: string, entries: readonly CraftedEntry[]): string => {
	fs.writeFileSync(file, tarBytes(entries));
	return file;
};
