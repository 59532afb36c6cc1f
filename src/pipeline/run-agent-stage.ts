/**
 * Run the agent in the booted sandbox (src/agent/run-agent.ts): each event goes to the reporter,
 * handler events are kept, agent phase times are added to the build's, the engine's log lines
 * feed the step tracker; the typed outcome becomes the agent's `result` or the UserError it
 * means (its code's exit code from src/errors.ts).
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {agentArgs, sandboxLayout, secretsBlock, stdinSecretCount, type CacheFolders} from '../agent/agent-args.js';
import {keepDaemonLog, withKeptDaemonLog} from '../agent/daemon-log.js';
import {hintFor} from '../agent/agent-errors.js';
import type {AgentEvent, AgentEventOf} from '../agent/contract.js';
import {runAgent, type AgentOutcome} from '../agent/run-agent.js';
import {errorTable, UserError} from '../errors.js';
import type {BuildReporter} from '../progress/events.js';
import {StepTracker} from '../progress/steps.js';
import type {Sandbox} from '../sandboxes/driver.js';
import {abortReason} from './abort.js';
import type {BuildStep} from './build-result.js';
import type {EngineDecision} from './engine-decision.js';
import type {HostPhases} from './host-phases.js';
import type {StagedInputs} from './stage-inputs.js';

/** Whether `folder` holds an exported BuildKit cache (an OCI layout's index.json) to import. */
const holdsCache = async (folder: string | undefined): Promise<boolean> =>
	folder !== undefined && fs.lstat(path.join(folder, 'index.json')).then(stat => stat.isFile(), () => false);

/**
 * The agent's argv, made in this one place: the chosen engine's plan (src/engines/plan.ts) for
 * the sandbox layout of the mounts, serialized with the agent's own options.
 */
export const agentArgv = async (staged: StagedInputs, cache: CacheFolders, engine: EngineDecision, debug: boolean): Promise<string[]> => {
	const layout = sandboxLayout(staged.request, staged.contexts, cache);
	const importable = await holdsCache(cache.from ?? (cache.dir === undefined ? undefined : path.join(cache.dir, 'buildkit')));
	const plan = engine.engine.plan(staged.request, {...layout, cache: {...layout.cache, importable}});
	return agentArgs(staged.request.platforms, plan, {
		hangTimeoutSeconds: staged.request.hangTimeoutSeconds,
		secretsFromStdin: stdinSecretCount(staged.request.engineOptions.secrets),
		debug,
	});
};

/** The agent's `result`, or the UserError its outcome means. */
export const resultOf = (outcome: AgentOutcome, signal: AbortSignal | undefined): AgentEventOf<'result'> => {
	switch (outcome.kind) {
		case 'succeeded': {
			if (outcome.result !== undefined) {
				return outcome.result;
			}

			break;
		}

		case 'interrupted': {
			throw abortReason(signal);
		}

		case 'failed': {
			const failure = outcome.error;
			throw new UserError(`${failure.platform ? `${failure.platform}: ` : ''}${failure.message}`, {hint: hintFor(failure.code), exitCode: errorTable[failure.code].exitCode, code: failure.code});
		}

		case 'protocol-error': {
			throw new UserError(`the agent broke the event contract: ${outcome.error.message}`, {hint: 'the builder image and this exobuild do not match; run `exobuild builder build --force`', exitCode: 1, code: 'E_PROTOCOL', cause: outcome.error});
		}

		case 'crashed': {
			throw new UserError(`the agent ended without a result (exit code ${outcome.exitCode ?? '-'}${outcome.signal ? `, signal ${outcome.signal}` : ''})${outcome.lastStderr === undefined ? '' : `: ${outcome.lastStderr}`}`, {hint: 'run with --progress plain to see its output; the engine may have crashed', exitCode: 1, code: 'E_AGENT_CRASHED'});
		}
	}

	throw new UserError('the agent ended without a result (exit code 0)', {hint: 'run with --progress plain to see its output; the engine may have crashed', exitCode: 1, code: 'E_AGENT_CRASHED'});
};

export interface AgentStageInput {
	readonly sandbox: Pick<Sandbox, 'runAgent'>;
	readonly staged: StagedInputs;
	readonly cache: CacheFolders;
	readonly engine: EngineDecision;
	readonly reporter: BuildReporter;
	readonly phases: Pick<HostPhases, 'add'>;
	/** Where env= secrets are read from. */
	readonly env: NodeJS.ProcessEnv;
	/** The host folder mounted at /exobuild/out, where the agent leaves the engine daemon's log. */
	readonly outDir: string;
	readonly sessionId: string;
	/** The daemon's log also as events (exobuild --debug). */
	readonly debug: boolean;
	readonly signal?: AbortSignal;
	/** A part of a routed build (src/pipeline/routing.ts): its vertex lines name its platform and node (labelEngineLine). */
	readonly label?: PartLabel;
	/** Added to its step ids, so the steps of parts run at the same time do not share ids. */
	readonly stepIdOffset?: number;
}

/** What a part of a routed build adds to BuildKit's vertex lines: its one platform, and the node that builds it. */
export interface PartLabel {
	/** The part's platform when it has one (buildctl then names none: `#5 [1/2] RUN …`). */
	readonly platform?: string;
	readonly node?: string;
}

/**
 * A BuildKit vertex line of a routed part, saying where it runs: `#5 [1/2] RUN …` built on node
 * z for linux/s390x becomes `#5 [linux/s390x @z 1/2] RUN …`, `#5 [linux/s390x 1/2] …` becomes
 * `#5 [linux/s390x @z 1/2] …`, `#3 [internal] load …` becomes `#3 [internal @z] load …`. Other lines unchanged.
 */
export const labelEngineLine = (line: string, label: PartLabel): string => {
	if (line.startsWith('{')) {
		return labelSolveStatus(line, label);
	}

	const vertex = /^(#\d+ \[)([^\]]+)(\] .*)$/.exec(line);
	if (vertex === null) {
		return line;
	}

	const [, head, where, tail] = vertex as unknown as [string, string, string, string];
	return `${head}${labelWhere(where, label)}${tail}`;
};

/** The bracketed part of a vertex name (`1/2`, `linux/s390x 1/2`, `internal`) with the part's platform and node. */
const labelWhere = (where: string, label: PartLabel): string => {
	const at = label.node === undefined ? '' : ` @${label.node}`;
	if (where.startsWith('linux/')) {
		const [platform, ...rest] = where.split(' ');
		return [`${platform}${at}`, ...rest].join(' ');
	}

	if (/^\d+\/\d+$/.test(where) && label.platform !== undefined) {
		return `${label.platform}${at} ${where}`;
	}

	return `${where}${at}`;
};

/** A vertex digest of a node's solve, made unique across parts: sha256 of `NODE\0DIGEST` (still digest-shaped, the same for every mention). */
export const nodeVertexDigest = (node: string, digest: string): string => `sha256:${crypto.createHash('sha256').update(`${node}\0${digest}`).digest('hex')}`;

type JsonObject = Record<string, unknown>;
const isObject = (value: unknown): value is JsonObject => typeof value === 'object' && value !== null && !Array.isArray(value);
const objects = (value: unknown): JsonObject[] => (Array.isArray(value) ? value.filter(isObject) : []);

/**
 * One line of `buildctl --progress rawjson` (a client.SolveStatus, moby/buildkit v0.32.2
 * client/graph.go: vertexes[].digest/.inputs/.name, statuses[].vertex, logs[].vertex,
 * warnings[].vertex) of a routed part: vertex names say the platform and node as plain lines do,
 * and a node's vertex digests are rewritten (nodeVertexDigest), so that two solves of the same
 * step (e.g. `[internal] load build definition`) on the local sandbox and a node, or on two
 * nodes, stay two vertices for a tool keying them by digest. A line that is not such JSON is unchanged.
 */
const labelSolveStatus = (line: string, label: PartLabel): string => {
	let status: unknown;
	try {
		status = JSON.parse(line);
	} catch {
		return line;
	}

	if (!isObject(status)) {
		return line;
	}

	const {node} = label;
	const digest = (value: unknown): unknown => (node !== undefined && typeof value === 'string' ? nodeVertexDigest(node, value) : value);
	for (const vertex of objects(status['vertexes'])) {
		vertex['digest'] = digest(vertex['digest']);
		if (Array.isArray(vertex['inputs'])) {
			vertex['inputs'] = vertex['inputs'].map(input => digest(input));
		}

		const name = vertex['name'];
		const where = typeof name === 'string' ? /^\[([^\]]+)\](.*)$/s.exec(name) : null;
		if (where !== null) {
			vertex['name'] = `[${labelWhere(where[1]!, label)}]${where[2]!}`;
		}
	}

	for (const key of ['statuses', 'logs', 'warnings']) {
		for (const entry of objects(status[key])) {
			entry['vertex'] = digest(entry['vertex']);
		}
	}

	return JSON.stringify(status);
};

export interface AgentStageResult {
	readonly result: AgentEventOf<'result'>;
	readonly handlers: ReadonlyArray<AgentEventOf<'handler'>>;
	readonly steps: readonly BuildStep[];
}

export const runAgentStage = async (input: AgentStageInput): Promise<AgentStageResult> => {
	const {reporter, signal} = input;
	const handlers: Array<AgentEventOf<'handler'>> = [];
	const steps = new StepTracker({engine: input.engine.engine.name});
	const {label} = input;
	const onEvent = (received: AgentEvent): void => {
		const event: AgentEvent = label !== undefined && received.event === 'log' && received.source === 'engine' ? {...received, line: labelEngineLine(received.line, label)} : received;
		if (event.event === 'handler') {
			handlers.push(event);
		} else if (event.event === 'phase-end') {
			input.phases.add(event.phase, event.ms);
		}

		reporter.report({kind: 'agent', event});
		const changes = event.event === 'log' && event.source === 'engine'
			? steps.onLine(event.platform, event.line)
			: (event.event === 'phase-end' && event.phase === 'build' ? steps.end() : []);
		for (const {step, state} of changes) {
			reporter.report({
				kind: 'step', id: steps.steps.indexOf(step) + 1 + (input.stepIdOffset ?? 0), name: step.name, state, cached: step.cached,
				...(step.platform === undefined ? {} : {platform: step.platform}), ...(step.ms === undefined ? {} : {ms: step.ms}),
			});
		}
	};

	const secrets = secretsBlock(input.staged.request.engineOptions.secrets, input.env);
	const outcome = await runAgent(input.sandbox, {
		args: await agentArgv(input.staged, input.cache, input.engine, input.debug),
		...(secrets === undefined ? {} : {stdin: secrets}),
		onEvent,
		onStderrLine: line => reporter.report({kind: 'agent-stderr', line}),
		...(signal === undefined ? {} : {signal}),
	});
	// The daemon's log leaves the out folder for the cache's logs folder, where an error names it.
	const kept = await keepDaemonLog(input.outDir, input.sessionId, input.env);
	const named: AgentOutcome = outcome.kind === 'failed' ? {...outcome, error: {...outcome.error, message: withKeptDaemonLog(outcome.error.message, kept)}} : outcome;
	return {
		result: resultOf(named, signal),
		handlers,
		steps: steps.steps.map(({name, platform, cached, ms}) => ({name, platform, cached, ms})),
	};
};
