/**
 * Errors a user can act on, and THE error table: every stable error code exobuild uses (its own
 * and the agent's, src/agent/contract.ts) with the exit code it ends the run with and a
 * default hint. Exit codes: 2 bad input (the command line, the files it names, the host's
 * setup), 1 the build (or an output, a download) failed, 129/130/131/143 interrupted by
 * SIGHUP/SIGINT/SIGQUIT/SIGTERM, 70 a bug in exobuild (anything that is not a UserError).
 */
import fs from 'node:fs';
import path from 'node:path';
import {ZodError} from 'zod';

export const exitCodes = {usage: 2, failed: 1, bug: 70} as const;

/** The exit code of a run ended by each signal (128 + its number), as shells report it. */
export const signalExitCodes = {SIGHUP: 129, SIGINT: 130, SIGQUIT: 131, SIGTERM: 143} as const;
export type StopSignal = keyof typeof signalExitCodes;
export const stopSignals = Object.keys(signalExitCodes) as StopSignal[];

export interface ErrorKind {
	readonly exitCode: number;
	readonly hint: string;
}

const usage = (hint: string): ErrorKind => ({exitCode: exitCodes.usage, hint});
const failed = (hint: string): ErrorKind => ({exitCode: exitCodes.failed, hint});

/** Every error code, with its exit code and default hint. test/unit/errors.test.ts checks every code used in src has a row. */
export const errorTable = {
	// The command line and the files it names.
	E_USAGE: usage('run `exobuild COMMAND --help` for the options'),
	E_BUILD_CONTEXT: usage('check the --build-context value and the folder it names'),
	E_PLATFORM: usage('pass --platform with one of the supported platforms (see `exobuild --help`)'),
	E_OUTPUT: usage('check the --output value and its dest'),
	E_ACCESS: usage('choose a path you can write to, or fix its permissions'),
	E_BAD_IMAGE: usage('the image or layout is not valid OCI; rebuild or re-export it'),
	E_OUTPUT_DEST: usage('write to a regular file (replaced whole), a symlink to one, a FIFO or character device, or - for stdout'),
	E_DRIVER: usage('choose another --driver'),
	E_NODE_DOWN: usage('check that buildkitd runs there and listens on that address, and the TLS files (`exobuild node inspect NAME`); or give the node\'s platforms with --platform'),
	// The host's setup (doctor says how to fix each).
	E_KERNEL: usage('run `exobuild doctor` for what this host lacks'),
	E_PRIVILEGE: usage('run `exobuild doctor` for what this host lacks'),
	E_DEPENDENCY: usage('install what is missing; `exobuild doctor` lists it'),
	E_USERNS: usage('run `exobuild doctor` for what this host lacks'),
	E_SUBORDINATE_IDS: usage('give your user 65536 subordinate ids: `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER`'),
	E_CONTAINER_CLI: usage('install Apple\'s container CLI (1.2 or later) from https://github.com/apple/container/releases'),
	E_CONTAINER_VERSION: usage('upgrade Apple\'s container CLI'),
	E_CONTAINER_SYSTEM: usage('start it with `container system start`'),
	// The builder image and exobuild's cache.
	E_BUILDER_IMAGE: usage('run `exobuild builder ls`, or make one with `exobuild builder build`'),
	E_BUILDER_ARCHIVE: usage('give an archive written by `exobuild builder save`'),
	E_CACHE: failed('run `exobuild prune`, or remove the folder named above'),
	E_CACHE_UNSAFE: usage('point EXOBUILD_CACHE_DIR at a folder of your own that holds nothing else'),
	E_BUILDER_MISMATCH: failed('restore the archive, or remove it (`exobuild builder rm`) and make or load it again'),
	E_REMOVE: failed('remove the folder as the sandbox\'s root: `unshare --user --map-root-user --map-auto rm -rf FOLDER`'),
	// Downloads.
	E_DOWNLOAD: failed('check the URL and the network, then run the command again (downloads resume)'),
	E_CHECKSUM: failed('check the --sha256 value and the URL'),
	// The build.
	E_OUTPUT_WRITE: failed('check the destination and its filesystem, then build again'),
	E_LAYER_REFUSED: failed('the image holds a layer entry exobuild will not apply on the host (named above); fix the image or its base'),
	E_ARCHIVE_REFUSED: failed('the archive holds an entry that is not a plain file or folder; make it again with `exobuild builder save`'),
	E_NO_SPACE: failed('free some space there (or point EXOBUILD_CACHE_DIR elsewhere), then build again'),
	E_PROTOCOL: failed('the builder image and this exobuild do not match; run `exobuild builder build --force`'),
	E_AGENT_CRASHED: failed('run with --progress plain to see its output; the engine may have crashed'),
	E_INTERRUPTED: {exitCode: signalExitCodes.SIGINT, hint: 'everything the run started was removed'},
	// The agent's codes (src/agent/contract.ts), as the host reports them.
	E_AGENT_USAGE: failed('exobuild and its builder image disagree about the agent\'s arguments; run `exobuild builder build --force`'),
	E_BINFMT_MOUNT: failed('the sandbox could not mount its own binfmt_misc: on Linux this needs kernel 6.7 or later; in Apple\'s container >= 1.2.0 /proc/sys is read-only (with 1.2.1 or later, EXOBUILD_APPLE_WRITABLE_PROC_SYS=1 lifts it; see docs/macos.md)'),
	E_EMULATOR_MISSING: failed('the builder image lacks that emulator; run `exobuild builder build --force`'),
	E_BINFMT_REGISTER: failed('the emulator could not be registered in the sandbox; run with --progress plain for details'),
	E_HANDLER_PROOF: failed('the emulator was registered but a test binary did not run under it; the emulator may be broken for this architecture'),
	E_ENGINE_MISSING: usage('the builder image does not have that engine; choose another with --engine'),
	E_ENGINE_START: failed('the build engine did not start; run with --progress plain to see its output'),
	E_PLATFORM_UNSUPPORTED: failed('the engine cannot run that platform even with emulation; check the platform list with --progress plain'),
	E_BASE_IMAGE: failed('a --build-context image could not be loaded by the engine; its message above says why'),
	E_BUILD_FAILED: failed('the Dockerfile build failed: the failing step and its output are shown above (use --progress plain for all of it)'),
	E_EXPORT_FAILED: failed('the built image could not be exported; check free disk space'),
	E_MERGE: failed('the per-platform results could not be put into one image index; run the build again with --progress plain to see each node\'s output'),
	E_ENGINE_UNSUPPORTED: usage('choose another engine with --engine (BuildKit where the builder image has it), or drop the option'),
	E_HANG: failed('under QEMU this is usually an emulator bug (e.g. Go >= 1.23 programs, QEMU issue 2738); try another QEMU (builder image) or, if the step only waits, raise --hang-timeout'),
	E_SECRETS: failed('the builder image and this exobuild do not match; run `exobuild builder build --force`'),
	E_INTERNAL: {exitCode: exitCodes.bug, hint: 'this is a bug in exobuild\'s agent; run with --progress plain and report the output'},
} as const satisfies Record<string, ErrorKind>;

export type KnownErrorCode = keyof typeof errorTable;

/** The table's row of `code`, if it has one. */
export const errorKind = (code: string): ErrorKind | undefined => (Object.hasOwn(errorTable, code) ? errorTable[code as KnownErrorCode] : undefined);

export interface UserErrorOptions {
	readonly hint?: string;
	/** Default: the table's exit code of `code` (2 for a code the table does not have). */
	readonly exitCode?: number;
	/** Default: E_USAGE. */
	readonly code?: string;
	readonly cause?: unknown;
}

/**
 * An error the user can act on: one line saying what is wrong, one hint saying what to do.
 * The CLI prints these without a stack trace (unless --debug) and exits with `exitCode`.
 * The exit code and the hint default to the table's for `code`.
 */
export class UserError extends Error {
	override readonly name = 'UserError';
	readonly hint: string | undefined;
	readonly exitCode: number;
	/** A stable, greppable code (also used for agent errors, see src/agent). */
	readonly code: string;

	constructor(message: string, options: UserErrorOptions = {}) {
		super(message, options.cause === undefined ? undefined : {cause: options.cause});
		this.code = options.code ?? 'E_USAGE';
		const kind = errorKind(this.code);
		this.hint = options.hint ?? kind?.hint;
		this.exitCode = options.exitCode ?? kind?.exitCode ?? exitCodes.usage;
	}
}

export const isUserError = (error: unknown): error is UserError => error instanceof UserError;

/** The run was stopped by `signal`: exit 128 + its number. */
export const interruptedBy = (signal: StopSignal, what = 'build', cause?: unknown): UserError =>
	new UserError(`${what} interrupted by ${signal}`, {
		hint: 'everything it started was removed', exitCode: signalExitCodes[signal], code: 'E_INTERRUPTED', ...(cause === undefined ? {} : {cause}),
	});

/** Node's error codes that are the user's world, not a bug. */
const noSpace = new Set(['ENOSPC', 'EDQUOT']);
const denied = new Set(['EACCES', 'EPERM', 'EROFS']);

/** The folder `file` is (a folder) or is in. */
const folderOf = (file: string): string => {
	try {
		return fs.statSync(file).isDirectory() ? file : path.dirname(file);
	} catch {
		return path.dirname(file);
	}
};

/**
 * A UserError for an error that reached the top without being one, where it is the user's
 * world rather than a bug: a full disk (ENOSPC/EDQUOT, exit 1, naming the folder), a path the
 * user may not write (EACCES/EPERM/EROFS, exit 2, naming it), a schema violation (one line, no
 * dump). Undefined for everything else (a bug: exit 70).
 */
export const userErrorOf = (error: unknown): UserError | undefined => {
	if (isUserError(error)) {
		return error;
	}

	if (error instanceof ZodError) {
		const [issue] = error.issues;
		const where = issue === undefined || issue.path.length === 0 ? '' : ` at ${issue.path.join('.')}`;
		return new UserError(`invalid data${where}: ${issue?.message ?? 'does not match its schema'}${error.issues.length > 1 ? ` (and ${error.issues.length - 1} more)` : ''}`, {
			hint: 'a file exobuild read (an image, a layout, a record) is not what it should be; run with --debug for the whole report',
			code: 'E_BAD_IMAGE', exitCode: exitCodes.usage, cause: error,
		});
	}

	const system = error as (NodeJS.ErrnoException & {dest?: unknown}) | undefined;
	const code = typeof system?.code === 'string' ? system.code : undefined;
	if (code === undefined) {
		return undefined;
	}

	const file = typeof system?.dest === 'string' ? system.dest : system?.path;
	if (noSpace.has(code)) {
		const folder = file === undefined ? 'a folder exobuild writes' : folderOf(file);
		return new UserError(`no space left on device in ${folder}${code === 'EDQUOT' ? ' (disk quota exceeded)' : ''}`, {
			hint: 'free some space there (or point EXOBUILD_CACHE_DIR elsewhere), then run again', code: 'E_NO_SPACE', exitCode: exitCodes.failed, cause: error,
		});
	}

	if (denied.has(code) && file !== undefined) {
		const why = code === 'EROFS' ? 'is on a read-only filesystem' : 'is not writable (permission denied)';
		return new UserError(`${file} ${why}`, {hint: 'choose a path you can write to, or fix its permissions', code: 'E_ACCESS', exitCode: exitCodes.usage, cause: error});
	}

	return undefined;
};
