/**
 * Upstream tools the distro builder image can carry, taken from release-style tarballs:
 * BuildKit (`bin/buildkitd`, `bin/buildctl` of a moby/buildkit release tarball) and
 * tonistiigi/binfmt (`bin/binfmt`). A source is a file path or an https URL, with its SHA-256
 * (required for a URL unless it is the pinned official release; computed for a file). The
 * tarball is hostile input: it is copied into exobuild's work folder and checked against its
 * SHA-256 there, read with the strict tar reader, and only the named members are taken, each
 * a regular file under a size cap and an ELF binary for this machine; a link, a device, a path
 * outside the archive (`../x`, `/x`) or a missing member refuses the whole tarball, and what
 * was written is removed.
 */
import crypto from 'node:crypto';
import {createReadStream} from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import {Writable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import {z} from 'zod';
import {UserError, isUserError} from '../errors.js';
import {openTarFile, tarEntries} from '../oci/tar-entries.js';
import {withLock} from '../runs/lock.js';
import {ensureCacheFolder, setAside} from '../runs/cache-guard.js';
import {memoisedSha256, openForHash} from '../runs/file-digests.js';
import {fetchVerified} from './fetch.js';
import {buildkitPin, buildkitUrlFor, buildkitVersion} from './upstream-pins.js';

export const toolNames = ['buildkit', 'binfmt'] as const;
export type ToolName = typeof toolNames[number];

/** What the builder record says of a tool: its version (from the tarball's name, else the pin) and the tarball's SHA-256. */
export const toolRefSchema = z.object({version: z.string().min(1).max(100), sha256: z.string().regex(/^[a-f\d]{64}$/)});
export type ToolRef = z.infer<typeof toolRefSchema>;

export type BuilderTools = Partial<Record<ToolName, ToolRef>>;

/** The source that asks for no such tool (and no download): `--buildkit none`, `EXOBUILD_BUILDKIT=none`. */
export const noTool = 'none';

/** A tool source as the user gave it (a flag or an environment variable): a file, an https URL, or `none`. */
export interface ToolRequest {
	readonly source: string;
	readonly sha256?: string | undefined;
}

interface Member {
	/** Path in the tarball. */
	readonly member: string;
	/** Path in the builder image (relative to /). */
	readonly target: string;
	readonly maxBytes: number;
}

interface ToolSpec {
	readonly name: ToolName;
	readonly what: string;
	readonly flag: string;
	readonly env: string;
	readonly members: readonly Member[];
	/** The version in a release tarball's file name. */
	readonly versionInName: RegExp;
	readonly example: string;
}

const mib = 1024 * 1024;

export const toolSpecs: Readonly<Record<ToolName, ToolSpec>> = {
	buildkit: {
		name: 'buildkit',
		what: 'BuildKit',
		flag: '--buildkit',
		env: 'EXOBUILD_BUILDKIT',
		members: [
			{member: 'bin/buildkitd', target: 'usr/bin/buildkitd', maxBytes: 256 * mib},
			{member: 'bin/buildctl', target: 'usr/bin/buildctl', maxBytes: 128 * mib},
		],
		versionInName: /^buildkit-(v\d+\.\d+\.\d+[\w.+-]*?)\.linux-/,
		example: `a moby/buildkit release tarball such as buildkit-${buildkitVersion}.linux-amd64.tar.gz (bin/buildkitd, bin/buildctl)`,
	},
	binfmt: {
		name: 'binfmt',
		what: 'tonistiigi/binfmt',
		flag: '--binfmt',
		env: 'EXOBUILD_BINFMT',
		members: [{member: 'bin/binfmt', target: 'usr/bin/binfmt', maxBytes: 64 * mib}],
		versionInName: /^binfmt-(?:deploy-)?(v\d+[\w.+-]*?)\.linux-/,
		example: 'a tarball holding tonistiigi/binfmt\'s installer at bin/binfmt',
	},
};

/** Every path a tool puts into the builder image. */
export const toolTargets = (name: ToolName): readonly string[] => toolSpecs[name].members.map(member => member.target);

/** Tarballs bigger than this (compressed) are refused before they are copied; the official BuildKit ones are ~30 MB. */
const maxTarballBytes = 512 * mib;
const maxEntries = 10_000;
/** Bytes of all entries together (the official BuildKit tarball holds ~200 MB with its QEMU builds). */
const maxTotalBytes = 2048 * mib;

const shaSchema = z.string().regex(/^[a-fA-F\d]{64}$/);

const usage = (message: string, hint: string): UserError => new UserError(message, {hint, code: 'E_USAGE', exitCode: 2});

const refused = (spec: ToolSpec, source: string, why: string): UserError => new UserError(`${spec.flag} ${source}: ${why}`, {
	hint: `give ${spec.example}`,
	code: 'E_USAGE',
	exitCode: 2,
});

/** A planned tool: where it comes from and what it will be recorded as (known before anything is downloaded). */
export interface PlannedTool {
	readonly name: ToolName;
	readonly ref: ToolRef;
	readonly location: {readonly kind: 'file'; readonly path: string} | {readonly kind: 'url'; readonly url: string};
	/** The pinned official release chosen because no source was given (a failed download then falls back to no BuildKit). */
	readonly byDefault: boolean;
}

export const sha256OfFile = async (file: string): Promise<string> => {
	const hash = crypto.createHash('sha256');
	await pipeline(createReadStream(file), new Writable({
		write(chunk: Buffer, _encoding, callback) {
			hash.update(chunk);
			callback();
		},
	}));
	return hash.digest('hex');
};

const versionOf = (spec: ToolSpec, location: string, sha256: string): string => {
	const name = path.basename(location.split(/[?#]/)[0] ?? location);
	const match = spec.versionInName.exec(name);
	if (match?.[1] !== undefined) {
		return match[1];
	}

	const pin = spec.name === 'buildkit' ? Object.values(knownPins()).find(candidate => candidate.sha256 === sha256) : undefined;
	return pin?.version ?? 'unknown';
};

const knownPins = (): Record<string, {version: string; sha256: string; url: string}> => {
	const pins: Record<string, {version: string; sha256: string; url: string}> = {};
	for (const arch of ['amd64', 'arm64', 'arm', 'ppc64le', 's390x', 'riscv64']) {
		const pin = buildkitPin(arch);
		if (pin !== undefined) {
			pins[arch] = pin;
		}
	}

	return pins;
};

/**
 * Checks a tool source and says what it is, without downloading: a file is hashed (and checked
 * against the given SHA-256), a URL must be https and needs a SHA-256 (given, or the pin's when
 * it is the pinned official release).
 */
export const planTool = async (name: ToolName, request: ToolRequest): Promise<PlannedTool> => {
	const spec = toolSpecs[name];
	const source = request.source.trim();
	if (source === '') {
		throw usage(`${spec.flag}: no source given`, `give a file path or an https URL of ${spec.example}`);
	}

	let expected: string | undefined;
	if (request.sha256 !== undefined && request.sha256 !== '') {
		const parsed = shaSchema.safeParse(request.sha256.trim());
		if (!parsed.success) {
			throw usage(`${spec.flag}-sha256 ${request.sha256} is not a SHA-256 digest`, 'give the 64 hex digits of the tarball\'s SHA-256 (no "sha256:" prefix)');
		}

		expected = parsed.data.toLowerCase();
	}

	if (/^[a-z][a-z\d+.-]*:/i.test(source) && !/^[a-z]:[\\/]/i.test(source)) {
		let url: URL;
		try {
			url = new URL(source);
		} catch {
			throw usage(`${spec.flag} ${source}: not a valid URL`, 'give an https URL or a file path');
		}

		if (url.protocol !== 'https:') {
			throw usage(`${spec.flag} ${source}: only https URLs are downloaded (${url.protocol.slice(0, -1)} is refused)`, 'use the https address, or download the file yourself and give its path');
		}

		const pin = spec.name === 'buildkit' ? Object.values(knownPins()).find(candidate => candidate.url === source) : undefined;
		const sha256 = expected ?? pin?.sha256;
		if (sha256 === undefined) {
			throw usage(`${spec.flag} ${source}: a download needs its SHA-256`, `add ${spec.flag}-sha256 HEX (or ${spec.env}_SHA256), the tarball's published checksum`);
		}

		return {name, ref: {version: versionOf(spec, url.pathname, sha256), sha256}, location: {kind: 'url', url: source}, byDefault: false};
	}

	const file = path.resolve(source);
	// One open and one fstat: the size check, the memo's key and the hash are all of this file.
	let openError: NodeJS.ErrnoException | undefined;
	const handle = await openForHash(file).catch((error: NodeJS.ErrnoException) => {
		openError = error;
		return undefined;
	});
	const stat = await handle?.stat();
	if (handle === undefined || !stat?.isFile()) {
		await handle?.close();
		const why = stat === undefined ? (openError?.code === 'ENOENT' || openError?.code === 'ENOTDIR' ? 'no such file' : `cannot be read (${openError?.code ?? 'unknown error'})`) : 'not a regular file';
		throw usage(`${spec.flag} ${source}: ${why}`, `give the path of ${spec.example}, or an https URL`);
	}

	let sha256: string;
	try {
		if (stat.size > maxTarballBytes) {
			throw refused(spec, source, `the file is ${Math.round(stat.size / mib)} MiB, more than any release tarball (limit ${maxTarballBytes / mib} MiB)`);
		}

		// Not read again by every build: the hash is kept in the cache, keyed by the file's identity (runs/file-digests.ts).
		sha256 = await memoisedSha256(handle, file);
	} finally {
		await handle.close();
	}

	if (expected !== undefined && expected !== sha256) {
		throw new UserError(`${spec.flag} ${source}: its SHA-256 is ${sha256}, not ${expected}`, {
			hint: `check that the file and ${spec.flag}-sha256 belong together (a partial or altered download has another checksum)`,
			code: 'E_CHECKSUM',
			exitCode: 2,
		});
	}

	return {name, ref: {version: versionOf(spec, file, sha256), sha256}, location: {kind: 'file', path: file}, byDefault: false};
};

/** The pinned official BuildKit release for this architecture, as a planned tool (undefined without a pin). */
export const defaultBuildkit = (architecture: string): PlannedTool | undefined => {
	const pin = buildkitPin(architecture);
	return pin === undefined ? undefined : {name: 'buildkit', ref: {version: pin.version, sha256: pin.sha256}, location: {kind: 'url', url: pin.url}, byDefault: true};
};

/** Why there is no default BuildKit for an architecture, as one line. */
export const noDefaultBuildkitReason = (architecture: string): string => {
	const url = buildkitUrlFor(architecture);
	return url === undefined
		? `BuildKit publishes no release for ${architecture}`
		: `no checksum of ${url.slice(url.lastIndexOf('/') + 1)} is pinned in exobuild`;
};

/** The tool requests in the environment: EXOBUILD_BUILDKIT[_SHA256], EXOBUILD_BINFMT[_SHA256]. */
export const toolRequestsFromEnv = (env: NodeJS.ProcessEnv = process.env): Partial<Record<ToolName, ToolRequest>> => {
	const requests: Partial<Record<ToolName, ToolRequest>> = {};
	for (const name of toolNames) {
		const source = env[toolSpecs[name].env];
		if (source !== undefined && source !== '') {
			requests[name] = {source, sha256: env[`${toolSpecs[name].env}_SHA256`]};
		}
	}

	return requests;
};

/**
 * A local copy of a planned tool's tarball: a file is used where it is (it is copied and
 * checked again before it is read); a URL is downloaded (resumable, SHA-256 checked while it
 * streams) into `downloadsDir/<sha256>.tar.gz`, kept for the next builder.
 */
export const obtainTool = async (planned: PlannedTool, downloadsDir: string, options: {signal?: AbortSignal; retries?: number; onProgress?: (step: string, detail?: string) => void} = {}): Promise<string> => {
	if (planned.location.kind === 'file') {
		return planned.location.path;
	}

	const {url} = planned.location;
	await ensureCacheFolder(downloadsDir);
	const dest = path.join(downloadsDir, `${planned.ref.sha256}.tar.gz`);
	const existing = await fs.lstat(dest).catch(() => undefined);
	if (existing !== undefined && !existing.isFile()) {
		await setAside(dest, 'unsafe', existing.isSymbolicLink() ? 'is a symlink' : 'is not a regular file');
	} else if (existing !== undefined) {
		if (await sha256OfFile(dest) === planned.ref.sha256) {
			return dest;
		}

		// Not what was downloaded (changed or cut short by hand): fetched again.
		await fs.rm(dest, {force: true});
	}

	options.onProgress?.(`Download ${toolSpecs[planned.name].what}`, url);
	const fetched = await withLock(`${dest}.lock`, () => options.onProgress?.('Waiting for another exobuild downloading the same tarball'), async () => fetchVerified({
		url, sha256: planned.ref.sha256, dest, ...(options.retries === undefined ? {} : {retries: options.retries}), ...(options.signal === undefined ? {} : {signal: options.signal}),
	}));
	return fetched.path;
};

/** ELF e_machine of the host's architecture (OCI name), to refuse a tarball for another machine. */
const elfMachines: Readonly<Record<string, number>> = {amd64: 62, '386': 3, arm64: 183, arm: 40, ppc64le: 21, s390x: 22, riscv64: 243};

const checkElf = async (file: string, architecture: string): Promise<string | undefined> => {
	const handle = await fs.open(file, 'r');
	try {
		const header = Buffer.alloc(20);
		const {bytesRead} = await handle.read(header, 0, 20, 0);
		if (bytesRead < 20 || header.subarray(0, 4).toString('latin1') !== '\x7fELF') {
			return 'is not an ELF executable';
		}

		const machine = header[5] === 2 ? header.readUInt16BE(18) : header.readUInt16LE(18);
		const wanted = elfMachines[architecture];
		return wanted === undefined || machine === wanted ? undefined : `is built for another CPU (ELF machine ${machine}; this machine is ${architecture})`;
	} finally {
		await handle.close();
	}
};

const hostile = (entryPath: string): boolean => entryPath.startsWith('/') || entryPath.split('/').includes('..');

const normalised = (entryPath: string): string => entryPath.split('/').filter(part => part !== '' && part !== '.').join('/');

export interface ExtractOptions {
	/** The OCI architecture the binaries must be built for. */
	readonly architecture: string;
	readonly signal?: AbortSignal;
	/** How the source is named in errors (the flag's value). */
	readonly sourceName?: string;
	/** For tests: a smaller size cap for every member. */
	readonly maxMemberBytes?: number;
}

/**
 * Takes the tool's members from `tarball` into `tree` (at their targets, mode 0755), after
 * copying the tarball to `scratch` and checking its SHA-256 there (so what is read is what was
 * hashed). On any refusal nothing is left in `tree`.
 */
export const extractTool = async (planned: PlannedTool, tarball: string, tree: string, scratch: string, options: ExtractOptions): Promise<readonly string[]> => {
	const spec = toolSpecs[planned.name];
	const sourceName = options.sourceName ?? (planned.location.kind === 'file' ? planned.location.path : planned.location.url);
	const copy = path.join(scratch, `${planned.name}-${planned.ref.sha256}.tar.gz`);
	await fs.copyFile(tarball, copy);
	try {
		const actual = await sha256OfFile(copy);
		if (actual !== planned.ref.sha256) {
			throw new UserError(`${spec.flag} ${sourceName}: its SHA-256 is now ${actual}, not ${planned.ref.sha256}`, {
				hint: 'the tarball changed after it was checked; give it again (a download in the cache is fetched again after `exobuild prune`)',
				code: 'E_CHECKSUM',
				exitCode: 2,
			});
		}

		return await takeMembers(spec, copy, tree, sourceName, options);
	} finally {
		await fs.rm(copy, {force: true});
	}
};

const takeMembers = async (spec: ToolSpec, tarball: string, tree: string, sourceName: string, options: ExtractOptions): Promise<readonly string[]> => {
	const wanted = new Map(spec.members.map(member => [member.member, member]));
	const written: string[] = [];
	let entries = 0;
	let total = 0;
	try {
		let stream;
		try {
			stream = await openTarFile(tarball);
		} catch (error) {
			throw refused(spec, sourceName, `not a readable tar archive (${(error as Error).message})`);
		}

		try {
			for await (const entry of tarEntries(stream, options.signal)) {
				entries++;
				total += entry.size ?? 0;
				if (entries > maxEntries || total > maxTotalBytes) {
					throw refused(spec, sourceName, `the archive holds more than ${entries > maxEntries ? `${maxEntries} entries` : `${maxTotalBytes / mib} MiB`}, more than any release tarball`);
				}

				if (hostile(entry.path)) {
					throw refused(spec, sourceName, `the entry "${entry.path}" names a path outside the archive`);
				}

				const named = wanted.get(normalised(entry.path));
				const member = named === undefined || options.maxMemberBytes === undefined ? named : {...named, maxBytes: Math.min(named.maxBytes, options.maxMemberBytes)};
				if (member === undefined) {
					entry.resume();
					continue;
				}

				if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'ContiguousFile') {
					throw refused(spec, sourceName, `${member.member} is a ${entry.type}${entry.linkpath ? ` (to ${entry.linkpath})` : ''}, not a regular file`);
				}

				if ((entry.size ?? 0) > member.maxBytes) {
					throw refused(spec, sourceName, `${member.member} is ${entry.size ?? 0} bytes, more than the ${member.maxBytes} allowed`);
				}

				const destination = path.join(tree, member.target);
				if (written.includes(destination)) {
					throw refused(spec, sourceName, `${member.member} appears twice`);
				}

				await fs.mkdir(path.dirname(destination), {recursive: true});
				// O_EXCL | O_NOFOLLOW: a file that is already there (or a link) is an error, never written through.
				const handle = await fs.open(destination, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o755);
				written.push(destination);
				let size = 0;
				try {
					await pipeline(entry, new Writable({
						write(chunk: Buffer, _encoding, callback) {
							size += chunk.length;
							if (size > member.maxBytes) {
								callback(refused(spec, sourceName, `${member.member} is larger than the ${member.maxBytes} bytes allowed`));
								return;
							}

							handle.write(chunk).then(() => {
								callback();
							}, callback);
						},
					}));
				} finally {
					await handle.close();
				}

				await fs.chmod(destination, 0o755);
			}
		} catch (error) {
			if (isUserError(error)) {
				throw error;
			}

			throw refused(spec, sourceName, `not a valid tar archive (${(error as Error).message.split('\n')[0]})`);
		}

		const missing = spec.members.filter(member => !written.includes(path.join(tree, member.target))).map(member => member.member);
		if (missing.length > 0) {
			throw refused(spec, sourceName, `the archive has no ${missing.join(' or ')}`);
		}

		for (const member of spec.members) {
			const wrong = await checkElf(path.join(tree, member.target), options.architecture);
			if (wrong !== undefined) {
				throw refused(spec, sourceName, `${member.member} ${wrong}`);
			}
		}

		return written;
	} catch (error) {
		await Promise.all(written.map(async file => fs.rm(file, {force: true})));
		throw error;
	}
};
