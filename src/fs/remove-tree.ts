/**
 * Removing a folder tree that a sandbox or an image may have made awkward to remove.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

/**
 * Removes a tree, making read-only folders writable first when a plain removal is refused (an
 * image's 0555 folders, when not root), and, when not root on Linux, in a user namespace with the
 * sandbox's id map for what subordinate ids own. A symlink is removed as itself, never followed.
 */
export const removeTree = async (dir: string): Promise<void> => {
	const top = await fs.lstat(dir).catch(() => undefined);
	if (top === undefined) {
		return;
	}

	if (!top.isDirectory()) {
		await fs.rm(dir, {force: true});
		return;
	}

	try {
		await fs.rm(dir, {recursive: true, force: true, maxRetries: 3});
	} catch {
		const open = async (folder: string): Promise<void> => {
			await fs.chmod(folder, 0o700).catch(() => undefined);
			const children = await fs.readdir(folder, {withFileTypes: true}).catch(() => []);
			await Promise.all(children.filter(child => child.isDirectory()).map(async child => open(path.join(folder, child.name))));
		};

		await open(dir);
		try {
			await fs.rm(dir, {recursive: true, force: true, maxRetries: 3});
		} catch (error) {
			// Files a rootless sandbox made belong to subordinate ids: remove them as the sandbox's root.
			if (process.platform !== 'linux' || process.getuid?.() === 0 || !['EACCES', 'EPERM'].includes((error as NodeJS.ErrnoException).code ?? '')) {
				throw error;
			}

			const {removeInUserNamespace} = await import('../sandboxes/linux-userns/namespaces.js');
			await removeInUserNamespace(dir);
		}
	}
};
