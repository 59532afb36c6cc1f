/**
 * `exobuild doctor`: every check a build depends on, each as a row (src/doctor/render.ts prints
 * them). Host rows come from the driver itself (diagnose() reuses the checks of features());
 * builder rows from the builder image store; platform rows from a real sandbox in which the agent
 * registers and proves each handler (`exobuild-agent prove`), torn down before doctor returns.
 * Doctor never makes a builder image and never touches the host's binfmt_misc.
 */
import path from 'node:path';
import fs from 'node:fs/promises';
import {type AgentEvent, type AgentEventOf, type ErrorCode} from '../agent/contract.js';
import {runAgent} from '../agent/run-agent.js';
import {platformHandlerArgs} from '../agent/agent-args.js';
import {hintFor} from '../agent/agent-errors.js';
import {newSessionId} from '../pipeline/run-build.js';
import {listWithCurrency, type BuilderImage} from '../builder-image/index.js';
import {chooseBuilder, verifyBuilderArchive} from '../builder-image/store.js';
import {isUserError} from '../errors.js';
import {builderImagesDir} from '../paths.js';
import {hostPlatform, parsePlatform, platformId, type Platform} from '../platforms/parse.js';
import {architectures} from '../platforms/table.js';
import {createOwnedDir, reapOwnedDirs} from '../runs/owned-dir.js';
import {createDriver} from '../sandboxes/index.js';
import type {CheckRow, DriverFeatures, DriverName, Sandbox, SandboxDriver} from '../sandboxes/driver.js';

export interface DoctorOptions {
	readonly driver: DriverName;
	/** Platforms to prove (default: defaultDoctorPlatforms of the sandbox's native machine). */
	readonly platforms?: readonly Platform[];
	readonly signal?: AbortSignal;
	/** What doctor is doing, for a human on stderr (starting a sandbox takes seconds). */
	readonly onProgress?: (message: string) => void;
}

/**
 * Every platform of the table except those the sandbox runs natively: its own machine, and
 * linux/386 on x86_64 (which x86_64 kernels run without an emulator).
 */
export const defaultDoctorPlatforms = (nativeMachine: string): Platform[] => architectures
	.filter(arch => arch.unameMachine !== nativeMachine && !(nativeMachine === 'x86_64' && arch.oci === '386'))
	.map(arch => parsePlatform(platformId(arch)));

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));
const fixOf = (error: unknown, fallback: string): string => (isUserError(error) && error.hint ? error.hint : fallback);

// ---------------------------------------------------------------- host

export const hostRows = async (driver: SandboxDriver): Promise<{rows: CheckRow[]; features: DriverFeatures | undefined}> => {
	const rows = driver.diagnose === undefined ? [] : await driver.diagnose();
	try {
		const features = await driver.features();
		rows.push({area: 'host', check: 'driver', status: 'ok', detail: `${driver.name} can start sandboxes (own binfmt_misc; native ${features.nativeMachine})`});
		return {rows, features};
	} catch (error) {
		// diagnose() already named the cause; otherwise this is the only row that can.
		if (!rows.some(row => row.status === 'fail')) {
			rows.push({area: 'host', check: 'driver', status: 'fail', detail: message(error), fix: fixOf(error, 'run with --debug and report it')});
		}

		return {rows, features: undefined};
	}
};

// ---------------------------------------------------------------- builder image

const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;

export const builderRows = async (): Promise<{rows: CheckRow[]; image: BuilderImage | undefined}> => {
	const stored = await listWithCurrency();
	const stale = stored.filter(image => !image.current);
	const image = chooseBuilder(stored);
	const rows: CheckRow[] = [];
	rows.push(image === undefined
		? {
			area: 'builder', check: 'image', status: 'fail',
			detail: `no current builder image in ${builderImagesDir()}${stale.length > 0 ? ` (${stale.length} from other exobuild versions, not used)` : ''}; doctor does not make one`,
			fix: 'exobuild builder build',
		}
		: {area: 'builder', check: 'image', status: 'ok', detail: `${image.reference} (${image.kind}, ${image.architecture})`});
	rows.push(stale.length === 0
		? {area: 'builder', check: 'stale images', status: 'ok', detail: 'none'}
		: {
			area: 'builder', check: 'stale images', status: 'warn',
			detail: `${stale.length} made from other recipe versions, never used by this exobuild: ${stale.map(old => old.reference).join(', ')}`,
			fix: 'exobuild prune --builders',
		});
	if (image !== undefined) {
		rows.push(await archiveRow(image));
	}

	return {rows, image};
};

/** Verifies the stored archive as `builder load` would (every blob's digest, labels, architecture) and that it is what its record says. */
const archiveRow = async (image: BuilderImage): Promise<CheckRow> => {
	const check = 'archive';
	const rebuild = 'exobuild builder build --force';
	await reapOwnedDirs(builderImagesDir(), name => name.startsWith('.verify-'));
	const scratch = await createOwnedDir(path.join(builderImagesDir(), `.verify-${process.pid}-${Date.now()}`), 'builder-verify');
	try {
		const verified = await verifyBuilderArchive(image.archivePath, scratch.path);
		if (verified.manifestDigest !== image.manifestDigest || verified.inputHash !== image.inputHash) {
			return {
				area: 'builder', check, status: 'fail',
				detail: `${image.archivePath} holds ${verified.manifestDigest} (inputs ${verified.inputHash.slice(0, 12)}), its record says ${image.manifestDigest} (inputs ${image.inputHash.slice(0, 12)})`,
				fix: rebuild,
			};
		}

		const {size} = await fs.stat(image.archivePath);
		return {area: 'builder', check, status: 'ok', detail: `${mib(size)}; every blob matches its digest; manifest ${image.manifestDigest.slice(0, 19)}…`};
	} catch (error) {
		return {area: 'builder', check, status: 'fail', detail: message(error), fix: rebuild};
	} finally {
		await scratch.remove();
	}
};

// ---------------------------------------------------------------- platforms

export interface ProveOutcome {
	readonly events: readonly AgentEvent[];
	readonly exitCode: number | undefined;
	readonly lastStderr?: string | undefined;
	/** The first stdout line off the event contract. */
	readonly protocolError?: string | undefined;
}

const rebuildFix = 'the builder image is incomplete: exobuild builder build --force';

const platformFix = (code: ErrorCode, detail: string): string => {
	switch (code) {
		case 'E_EMULATOR_MISSING': {
			return rebuildFix;
		}

		case 'E_HANDLER_PROOF': {
			return /no probe binary/.test(detail)
				? rebuildFix
				: 'the emulator does not run binaries of this architecture: remake the builder image (exobuild builder build --force), and report it if that does not help';
		}

		case 'E_BINFMT_REGISTER': {
			return 'the sandbox\'s kernel refused the handler: report it with this output (the kernel needs CONFIG_BINFMT_MISC)';
		}

		default: {
			return hintFor(code);
		}
	}
};

const handlerRows = (handler: AgentEventOf<'handler'>): CheckRow[] => {
	const area = handler.platform;
	if (handler.mode === 'native') {
		return [
			{area, check: 'emulator', status: 'ok', detail: 'none needed: the sandbox\'s kernel runs it natively'},
			{area, check: 'handler', status: 'ok', detail: `native: the probe printed ${handler.proof} with no handler registered`},
		];
	}

	const who = handler.registeredBy === 'binfmt' ? 'tonistiigi\'s binfmt' : 'the agent';
	return [
		{area, check: 'emulator', status: 'ok', detail: `${handler.emulator ?? '?'}: ${handler.emulatorVersion ?? 'no version'}`},
		{area, check: 'handler', status: 'ok', detail: `${handler.handler ?? '?'} registered by ${who} (flags ${handler.flags ?? '?'}); the probe printed ${handler.proof}`},
	];
};

/** The rows of the sandbox's agent and of each platform, from what `exobuild-agent prove` printed. Pure. */
export const proveRows = (platforms: readonly Platform[], outcome: ProveOutcome): CheckRow[] => {
	const hello = outcome.events.find((event): event is AgentEventOf<'hello'> => event.event === 'hello');
	const errors = outcome.events.filter((event): event is AgentEventOf<'error'> => event.event === 'error');
	const terminal = errors.find(error => error.platform === undefined);
	const rows: CheckRow[] = [];
	if (outcome.protocolError !== undefined) {
		rows.push({area: 'sandbox', check: 'agent', status: 'fail', detail: `the agent broke the event contract: ${outcome.protocolError}`, fix: 'the builder image and this exobuild do not match: exobuild builder build --force'});
	} else if (terminal !== undefined) {
		rows.push({area: 'sandbox', check: 'agent', status: 'fail', detail: `${terminal.code}: ${terminal.message}`, fix: hintFor(terminal.code)});
	} else if (hello === undefined) {
		rows.push({
			area: 'sandbox', check: 'agent', status: 'fail',
			detail: `the agent said nothing (exit ${outcome.exitCode ?? '-'}${outcome.lastStderr === undefined ? '' : `: ${outcome.lastStderr}`})`,
			fix: 'the builder image may be damaged: exobuild builder build --force',
		});
	} else {
		rows.push({area: 'sandbox', check: 'agent', status: 'ok', detail: `exobuild-agent ${hello.agentVersion} on ${hello.machine}, kernel ${hello.kernel}, engine ${hello.engine}`});
	}

	for (const platform of platforms) {
		const handler = outcome.events.find((event): event is AgentEventOf<'handler'> => event.event === 'handler' && event.platform === platform.id);
		const error = errors.find(candidate => candidate.platform === platform.id);
		if (handler !== undefined) {
			rows.push(...handlerRows(handler));
		} else if (error !== undefined) {
			rows.push({area: platform.id, check: error.code === 'E_EMULATOR_MISSING' ? 'emulator' : 'handler', status: 'fail', detail: `${error.code}: ${error.message}`, fix: platformFix(error.code, error.message)});
		} else {
			rows.push({
				area: platform.id, check: 'handler', status: 'fail',
				detail: terminal === undefined && outcome.protocolError === undefined
					? `not proven: the agent ended without reporting it (exit ${outcome.exitCode ?? '-'}${outcome.lastStderr === undefined ? '' : `: ${outcome.lastStderr}`})`
					: 'not proven: the agent stopped before it (see sandbox agent)',
				fix: terminal === undefined ? 'run exobuild doctor again; if it persists: exobuild builder build --force' : hintFor(terminal.code),
			});
		}
	}

	return rows;
};

/** Rows of platforms that were not checked, and why. */
export const skippedRows = (platforms: readonly Platform[], why: string, fix: string): CheckRow[] =>
	platforms.map(platform => ({area: platform.id, check: 'handler', status: 'warn', detail: `skipped: ${why}`, fix}));

const proveInSandbox = async (driver: SandboxDriver, image: BuilderImage, platforms: readonly Platform[], options: DoctorOptions): Promise<CheckRow[]> => {
	const rows: CheckRow[] = [];
	let sandbox: Sandbox;
	options.onProgress?.(`starting a ${driver.name} sandbox from ${image.reference}`);
	try {
		sandbox = await driver.start({sessionId: newSessionId(), builderImage: image, mounts: []});
	} catch (error) {
		return [
			{area: 'sandbox', check: 'start', status: 'fail', detail: message(error), fix: fixOf(error, 'run with --debug and report it')},
			...skippedRows(platforms, 'the sandbox did not start', 'see sandbox start'),
		];
	}

	try {
		rows.push({area: 'sandbox', check: 'start', status: 'ok', detail: `${driver.name} sandbox ${sandbox.id} from ${image.reference}`});
		options.onProgress?.(`proving ${platforms.map(platform => platform.id).join(', ')}`);
		const events: AgentEvent[] = [];
		const outcome = await runAgent(sandbox, {
			args: ['prove', ...platformHandlerArgs(platforms)],
			mode: 'prove',
			onEvent: event => events.push(event),
			...(options.signal === undefined ? {} : {signal: options.signal}),
		});
		const exitCode = outcome.kind === 'succeeded' ? 0 : (outcome.kind === 'failed' || outcome.kind === 'crashed' ? outcome.exitCode : undefined);
		const lastStderr = outcome.kind === 'crashed' ? outcome.lastStderr : undefined;
		const protocolError = outcome.kind === 'protocol-error' ? message(outcome.error) : undefined;
		rows.push(...proveRows(platforms, {events, exitCode, lastStderr, protocolError}));
	} finally {
		try {
			await sandbox.stop();
			rows.push({area: 'sandbox', check: 'stop', status: 'ok', detail: 'torn down with everything it registered'});
		} catch (error) {
			rows.push({area: 'sandbox', check: 'stop', status: 'fail', detail: message(error), fix: `exobuild prune --driver ${driver.name}`});
		}
	}

	// Keep sandbox rows together, before the platforms'.
	return [...rows.filter(row => row.area === 'sandbox'), ...rows.filter(row => row.area !== 'sandbox')];
};

// ---------------------------------------------------------------- all of it

export const runDoctor = async (options: DoctorOptions): Promise<CheckRow[]> => {
	const driver = createDriver(options.driver);
	options.onProgress?.(`checking the host for the ${driver.name} driver`);
	const host = await hostRows(driver);
	options.onProgress?.('checking the builder image');
	const builder = await builderRows();
	const nativeMachine = host.features?.nativeMachine ?? hostPlatform()?.arch.unameMachine ?? process.arch;
	const platforms = options.platforms ?? defaultDoctorPlatforms(nativeMachine);
	let platformRows: CheckRow[];
	if (builder.image === undefined) {
		platformRows = skippedRows(platforms, 'there is no current builder image to start a sandbox from', 'exobuild builder build, then exobuild doctor again');
	} else if (host.features === undefined) {
		platformRows = skippedRows(platforms, `this host cannot start a ${driver.name} sandbox (see the host rows)`, 'fix the failing host checks above, then exobuild doctor again');
	} else {
		platformRows = await proveInSandbox(driver, builder.image, platforms, options);
	}

	return [...host.rows, ...builder.rows, ...platformRows];
};
