/**
 * What the distro builder image is made of, and the hashes that name it. Everything is derived
 * from the platform table and the files in vm-image/; the mirror is not part of the identity
 * (an air-gapped mirror must give the same image name).
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {stampAgentVersion} from '../agent/agent-version.js';
import {architectures} from '../platforms/table.js';
import {vmImageDir} from '../paths.js';
import {toolNames, type BuilderTools} from './upstream-tools.js';

/**
 * Debian packages of the base layer. netavark: buildah >= 1.30 wants a network backend even with
 * --network host; mawk: the agent's hang watchdog reads /proc with awk; runc: the OCI runtime of
 * both buildah and BuildKit's OCI worker (buildkitd looks for `buildkit-runc`, then `runc`, on
 * PATH: moby/buildkit v0.32.2 worker/runc). The recipe also links each `qemu-ARCH-static` to
 * `/usr/bin/qemu-ARCH`, where tonistiigi/binfmt registers QEMU (its image's layout).
 * openssh-client: buildctl reaches ssh:// nodes by running `ssh [-l USER] [-p PORT] -- HOST
 * buildctl [--addr unix://SOCKET] dial-stdio` (moby/buildkit v0.32.2 client/connhelper/ssh/ssh.go).
 */
export const builderPackages = ['qemu-user-static', 'buildah', 'runc', 'netavark', 'ca-certificates', 'mount', 'procps', 'mawk', 'openssh-client'] as const;

/** Suites tried in order (a mirror mid-sync can serve a stale index under one name and a good one under another). */
export const defaultSuites = ['trixie', 'stable'] as const;

export const defaultMirror = 'http://deb.debian.org/debian';

/** The recipe of layer 1 (the Debian root filesystem). */
export const rootfsRecipe = path.join(vmImageDir, 'make-builder-rootfs.sh');

/** Files of layer 2: [path in vm-image/, path in the image, mode]. */
export const agentLayerFiles = [
	['exobuild-agent', 'usr/local/bin/exobuild-agent', 0o755],
	// buildkitd is always started with --config (src/engines/buildkit): present even without BuildKit.
	['buildkitd.toml', 'etc/buildkit/buildkitd.toml', 0o644],
	// ssh's options for ssh:// nodes (src/nodes/probe.ts mounts the agent socket and known_hosts
	// it names); Debian's and Ubuntu's /etc/ssh/ssh_config include /etc/ssh/ssh_config.d/*.conf.
	['node-ssh.conf', 'etc/ssh/ssh_config.d/exobuild-node.conf', 0o644],
] as const;

/** A layer-2 file as it goes into the image: the agent stamped with exobuild's version (src/agent/agent-version.ts). */
export const agentLayerContent = async (source: (typeof agentLayerFiles)[number][0]): Promise<Buffer> => {
	const content = await fs.readFile(path.join(vmImageDir, source));
	return source === 'exobuild-agent' ? Buffer.from(stampAgentVersion(content.toString('utf8'))) : content;
};

/** QEMU=Debian pairs of every architecture in the table, as the recipe takes them. */
export const archPairs = (): string[] => architectures.map(arch => `${arch.qemu}=${arch.debian}`);

const hashOf = (parts: ReadonlyArray<string | Buffer>): string => {
	const hash = crypto.createHash('sha256');
	for (const part of parts) {
		hash.update(String(Buffer.byteLength(part)));
		hash.update(':');
		hash.update(part);
	}

	return hash.digest('hex');
};

export interface RecipeHashes {
	/** Names layer 1: the recipe scripts, packages, architectures, suites. */
	readonly rootfsHash: string;
	/**
	 * Names the recipe: layer 1's hash plus exobuild's files of layer 2. A stored distro builder
	 * made from another recipe is stale; builders of the same recipe differ only in the upstream
	 * tools they carry (distroInputHash).
	 */
	readonly recipeHash: string;
}

/**
 * Names a distro builder image: its recipe plus the SHA-256 of each upstream tarball whose tools
 * it carries in layer 2, so another BuildKit or binfmt tarball gives another builder.
 */
export const distroInputHash = (recipeHash: string, tools: BuilderTools): string =>
	hashOf([recipeHash, ...toolNames.flatMap(name => [name, tools[name]?.sha256 ?? '-'])]);

export const recipeHashes = async (suites: readonly string[] = defaultSuites): Promise<RecipeHashes> => {
	const recipe = await fs.readFile(rootfsRecipe);
	const downloader = await fs.readFile(path.join(vmImageDir, 'debian-download.sh'));
	const probes = await fs.readFile(path.join(vmImageDir, 'make-probes.sh'));
	const rootfsHash = hashOf([recipe, downloader, probes, builderPackages.join(' '), archPairs().join(' '), suites.join(' ')]);
	const layerFiles = await Promise.all(agentLayerFiles.map(async ([source, target, mode]) => [await agentLayerContent(source), target, String(mode)]).flat());
	return {rootfsHash, recipeHash: hashOf([rootfsHash, ...layerFiles.flat()])};
};
