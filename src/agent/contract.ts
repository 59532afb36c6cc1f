/**
 * THE event contract between the host and the in-sandbox agent (vm-image/exobuild-agent).
 *
 * The agent writes one JSON object per line on stdout; anything else on stdout is a protocol
 * error. Every line carries `v` (contract version) and `event`. This file is the only place the
 * contract is written down: the agent's emitters (`emit_*` in vm-image/exobuild-agent) follow it,
 * and test/agent checks every line the agent prints against these schemas.
 *
 * Lifecycle of one `build` run: hello → phase-start/phase-end pairs (with handler, engine, log
 * lines in between) → exactly one terminal event: `result` (exit 0) or `error` (non-zero exit).
 *
 * A `prove` run (`exobuild doctor`) is hello → phase-start binfmt → per platform either `handler`
 * or an `error` carrying that `platform` (not terminal there: the other platforms go on) →
 * phase-end binfmt (ok: all proven); no `result`. An `error` without `platform` is terminal in
 * both. See docs/agent-protocol.md.
 *
 * A `query` run (`exobuild node add/inspect`) is hello → one `query` event per command, in
 * order, up to the first that fails; exit 0 (a command that failed is reported in its event, not as an error).
 */
import {z} from 'zod';

export const contractVersion = 1;

/** Phases, in order. `build` and `export` may repeat once per platform (with `platform` set). */
export const phaseNames = ['binfmt', 'engine-start', 'platform-check', 'base-images', 'build', 'export'] as const;
export const phaseName = z.enum(phaseNames);
export type PhaseName = z.infer<typeof phaseName>;

/** Stable error codes. The host maps each to a hint; tests assert on them. */
export const errorCodes = [
	'E_AGENT_USAGE', // the agent was called with bad arguments (a host bug)
	'E_BINFMT_MOUNT', // binfmt_misc could not be mounted in the sandbox
	'E_EMULATOR_MISSING', // no static qemu-<arch> in the builder image
	'E_BINFMT_REGISTER', // writing the handler failed, or tonistiigi binfmt reported it unsupported
	'E_HANDLER_PROOF', // the probe binary of an architecture did not run / printed the wrong uname -m
	'E_ENGINE_MISSING', // the requested engine's binaries are not in the image
	'E_ENGINE_START', // the engine daemon did not become ready
	'E_PLATFORM_UNSUPPORTED', // the engine does not list a requested platform
	'E_BASE_IMAGE', // a base image (named build context) could not be loaded
	'E_BUILD_FAILED', // the Dockerfile build failed (a RUN step exited non-zero, syntax error…)
	'E_EXPORT_FAILED', // the OCI layout could not be written
	'E_ENGINE_UNSUPPORTED', // an option the chosen engine cannot carry out (the message names it)
	'E_HANG', // a build step produced no output and used no CPU for the hang timeout (watchdog)
	'E_SECRETS', // the env= secrets on stdin (--secrets-stdin) could not be read, or their tmpfs not mounted
	'E_INTERRUPTED', // the agent got SIGTERM/SIGINT/SIGHUP/SIGQUIT
	'E_INTERNAL', // anything else
] as const;
export const errorCode = z.enum(errorCodes);
export type ErrorCode = z.infer<typeof errorCode>;

const base = {v: z.literal(contractVersion)};
/** Canonical platform id as produced by src/platforms (linux/arm/v7, linux/ppc64le…). */
const platformField = z.string().regex(/^linux\/[a-z0-9]+(\/v[0-9]+)?$/);
const digest = z.string().regex(/^sha256:[a-f0-9]{64}$/);

export const helloEvent = z.object({
	...base,
	event: z.literal('hello'),
	agentVersion: z.string(),
	/** `uname -m` inside the sandbox. */
	machine: z.string(),
	kernel: z.string(),
	/** Engine chosen (after resolving `auto`). */
	engine: z.enum(['buildkit', 'buildah']),
});

export const phaseStartEvent = z.object({
	...base,
	event: z.literal('phase-start'),
	phase: phaseName,
	platform: platformField.optional(),
});

export const phaseEndEvent = z.object({
	...base,
	event: z.literal('phase-end'),
	phase: phaseName,
	platform: platformField.optional(),
	/** Wall time of the phase in milliseconds. */
	ms: z.number().int().nonnegative(),
	ok: z.boolean(),
});

export const handlerEvent = z.object({
	...base,
	event: z.literal('handler'),
	platform: platformField,
	/** native: the kernel runs it without help; emulated: a binfmt handler was registered and proven. */
	mode: z.enum(['native', 'emulated']),
	/** Who registered the handler: tonistiigi's `binfmt`, the agent itself, or nobody (native). */
	registeredBy: z.enum(['binfmt', 'agent', 'none']),
	/** binfmt_misc handler name (qemu-ppc64le), absent for native. */
	handler: z.string().optional(),
	/** Interpreter path as registered, absent for native. */
	emulator: z.string().optional(),
	/** First line of `<emulator> --version`, absent for native. */
	emulatorVersion: z.string().optional(),
	/** Flags as the kernel reports them for the handler (e.g. "POCF"), absent for native. */
	flags: z.string().optional(),
	/** What the probe binary printed for `uname -m` (the proof). */
	proof: z.string(),
});

export const engineEvent = z.object({
	...base,
	event: z.literal('engine'),
	engine: z.enum(['buildkit', 'buildah']),
	version: z.string(),
	/** Platforms the engine reports it can run (buildkit: `debug workers`; buildah: the proven handlers + native). */
	platforms: z.array(platformField),
});

export const logEvent = z.object({
	...base,
	event: z.literal('log'),
	/**
	 * engine: a line of an engine command's output (a `run` step of the plan); daemon: a line of
	 * the engine daemon's own log (buildkitd), sent only when the agent runs with --debug (it is
	 * always in the daemon log file, see src/agent/daemon-log.ts); agent: the agent's own diagnostics.
	 */
	source: z.enum(['engine', 'daemon', 'agent']),
	platform: platformField.optional(),
	line: z.string(),
});

export const resultEvent = z.object({
	...base,
	event: z.literal('result'),
	engine: z.enum(['buildkit', 'buildah']),
	/** In-sandbox path of the OCI image layout directory the agent wrote. */
	layout: z.string(),
	platforms: z.array(platformField).min(1),
	/** Digest of the image manifest (one platform) or image index (several) in the layout. */
	digest,
});

/** The most output a `query` event carries (the agent's QUERY_OUTPUT_BYTES, plus room for escapes). */
export const maxQueryOutputChars = 4 * 65_536;

export const queryEvent = z.object({
	...base,
	event: z.literal('query'),
	/** Which command of the run (0-based, in argv order). */
	index: z.number().int().nonnegative(),
	/** Its exit code: 124 timed out (coreutils timeout), 127 not in the builder image. */
	exitCode: z.number().int().nonnegative(),
	/** The first 64 KiB of its stdout and stderr, interleaved. */
	output: z.string().max(maxQueryOutputChars),
});

export const errorEvent = z.object({
	...base,
	event: z.literal('error'),
	code: errorCode,
	message: z.string(),
	platform: platformField.optional(),
});

export const agentEvent = z.discriminatedUnion('event', [
	helloEvent,
	phaseStartEvent,
	phaseEndEvent,
	handlerEvent,
	engineEvent,
	logEvent,
	resultEvent,
	queryEvent,
	errorEvent,
]);
export type AgentEvent = z.infer<typeof agentEvent>;
export type AgentEventOf<E extends AgentEvent['event']> = Extract<AgentEvent, {event: E}>;

/** Parses one stdout line of the agent. Throws a descriptive Error on anything off-contract. */
export const parseAgentLine = (line: string): AgentEvent => {
	let json: unknown;
	try {
		json = JSON.parse(line);
	} catch (error) {
		throw new Error(`agent printed a line that is not JSON: ${JSON.stringify(line.slice(0, 200))}`, {cause: error});
	}

	const parsed = agentEvent.safeParse(json);
	if (!parsed.success) {
		throw new Error(`agent event off contract (${parsed.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}): ${line.slice(0, 200)}`);
	}

	return parsed.data;
};
