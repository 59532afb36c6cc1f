/**
 * One build, from a validated request to its outputs, as a pipeline of stages with explicit
 * inputs and outputs, each in its own module:
 *
 *   resolve inputs (./stage-inputs.ts) → decide the engine (`decideEngine`, below) → reap orphans
 *   → builder image (deps.builders) → stage inputs into the scratch folder (./stage-inputs.ts)
 *   → boot (./boot.ts) → run the agent (./run-agent-stage.ts) → tear down (./teardown.ts)
 *   → deliver outputs (./deliver-outputs.ts)
 *
 * Its dependencies are passed in (./deps.ts): the sandbox driver, the builder image store, the
 * reporter, the stop signal. Everything created here is removed in `finally` blocks; what a hard
 * kill leaves behind is removed by the next run's reaping phase.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import process from 'node:process';
import type {CacheFolders} from '../agent/agent-args.js';
import {buildMounts, buildVolumes} from '../agent/agent-args.js';
import {builderEngines, type BuilderImage} from '../builder-image/index.js';
import {chooseEngine, engines, type BaseFacts, type EngineName} from '../engines/index.js';
import {engineKinds} from '../engines/plan.js';
import {UserError} from '../errors.js';
import {addExitCleanup} from '../runs/exit-cleanups.js';
import {reapPartials} from '../runs/partials.js';
import type {SandboxDriver} from '../sandboxes/driver.js';
import {refuseForEngine} from '../cli/build-flags/options.js';
import type {BuildRequest} from '../request/build-request.js';
import {buildctlArgv, probeMounts, probeNode} from '../nodes/probe.js';
import {readNodes, type NodeRecord} from '../nodes/store.js';
import {producedLayout, type LayoutSource} from '../oci/blobs.js';
import {mergeLayouts} from '../oci/merge.js';
import {planRemoteBuildKit} from '../engines/buildkit/plan.js';
import {abortable, abortReason} from './abort.js';
import {bootSandbox, type BootedSandbox} from './boot.js';
import {withProjectCache} from './build-cache.js';
import {withEngineState} from './engine-state.js';
import type {BuildResult} from './build-result.js';
import type {BuildDeps, BuilderStore} from './deps.js';
import {deliverOutputs, readExportedImage} from './deliver-outputs.js';
import type {EngineDecision} from './engine-decision.js';
import {createHostScratch, reapHostScratch, type OwnedHostScratch} from './host-scratch.js';
import {hostPhases, type HostPhases} from './host-phases.js';
import {runAgentStage, type AgentStageResult, type PartLabel} from './run-agent-stage.js';
import {checkNodes, manifestAnnotations, nodeTarget, planRoutes, refuseRouted, type RoutePlan} from './routing.js';
import {resolveInputs, stageInputs, type ResolvedInputs} from './stage-inputs.js';
import {tearDown, tearDownRemaining} from './teardown.js';

export {abortable} from './abort.js';
export type {BuildResult} from './build-result.js';
export {cacheBuilderStore, type BuildDeps, type BuilderStore} from './deps.js';

export const newSessionId = (): string => `exo-${Date.now().toString(36)}-${crypto.randomBytes(4).toString('hex')}`;

/** The engines a builder has (a builder still to be made: every engine, judged again once it is made). */
const enginesOf = (builder: PlannedBuilder): readonly EngineName[] =>
	builder.image === undefined ? engineKinds : builderEngines(builder.image);

/**
 * The one place the engine is decided, before any sandbox (or a long make of the builder)
 * starts: BuildKit wherever the builder has it (chooseEngine), refused (exit 2) if it cannot do
 * what the request asks, with the warnings the pipeline prints once.
 */
export const decideEngine = (request: BuildRequest, builder: PlannedBuilder, bases: readonly BaseFacts[]): EngineDecision => {
	const name = chooseEngine(request.engine, enginesOf(builder), `the builder image ${builder.reference}`);
	refuseForEngine(request, name, request.engine === 'auto' ? `the builder image ${builder.reference} builds with ${name}` : `--engine ${name}`);
	const engine = engines[name];
	return {engine, warnings: engine.warnings(request, bases)};
};

interface PlannedBuilder {
	readonly kind: BuilderImage['kind'];
	readonly reference: string;
	readonly image: BuilderImage | undefined;
}

/** The stored builder image, or the kind the driver would make, to decide the engine by before making it. */
const findOrPlanBuilder = async (builders: BuilderStore, driver: SandboxDriver): Promise<PlannedBuilder> => {
	const image = await builders.find();
	if (image !== undefined) {
		return {kind: image.kind, reference: image.reference, image};
	}

	const kind = driver.defaultRecipe;
	return {kind, reference: `(a ${kind} builder, to be made)`, image: undefined};
};

interface PartContext {
	readonly deps: BuildDeps;
	readonly phases: HostPhases;
	readonly builderImage: BuilderImage;
	readonly engine: EngineDecision;
	readonly cache: CacheFolders;
	readonly signal: AbortSignal | undefined;
	/** A routed part: the node that builds it (its TLS files are mounted read-only, as the probe mounts them). */
	readonly node?: NodeRecord;
	readonly stepIdOffset?: number;
	readonly label?: PartLabel;
}

/** One sandbox's work: its OCI layout is in `scratch.outDir`/oci-layout; the caller removes the scratch folder. */
interface PartRun {
	readonly agent: AgentStageResult;
	readonly scratch: OwnedHostScratch;
	/** Drops the scratch's exit cleanup once it is removed. */
	readonly forget: () => void;
}

/** Stages in a scratch folder of its own, boots, runs the agent and tears down; the scratch is removed on failure. */
const runPart = async (request: BuildRequest, inputs: ResolvedInputs, context: PartContext): Promise<PartRun> => {
	const {deps: {driver, reporter}, phases, cache, signal, node} = context;
	const sessionId = newSessionId();
	const scratch = await createHostScratch(sessionId);
	const forget = addExitCleanup(scratch.remove);
	let booted: BootedSandbox | undefined;
	let ok = false;
	try {
		const staged = await stageInputs(request, inputs, scratch);
		booted = await bootSandbox(driver, {
			sessionId,
			builderImage: context.builderImage,
			mounts: [...buildMounts(staged.request, staged.contexts, scratch, cache, staged.secretFiles), ...(node === undefined ? [] : probeMounts(nodeTarget(node), context.deps.env ?? process.env))],
			volumes: buildVolumes(cache),
			...(signal === undefined ? {} : {signal}),
		}, phases);
		const agent = await runAgentStage({
			sandbox: booted.sandbox, staged, cache, engine: context.engine, reporter, phases, env: context.deps.env ?? process.env,
			outDir: scratch.outDir, sessionId, debug: context.deps.debug ?? false, ...(signal === undefined ? {} : {signal}),
			...(context.label === undefined ? {} : {label: context.label}), ...(context.stepIdOffset === undefined ? {} : {stepIdOffset: context.stepIdOffset}),
		});
		await tearDown(booted, phases);
		ok = true;
		return {agent, scratch, forget};
	} finally {
		await tearDownRemaining(booted, reporter);
		if (!ok) {
			await scratch.remove();
			forget();
		}
	}
};

/** Stages in the scratch folder, boots, runs the agent, tears down and delivers, with `cache` as the engine's cache. */
const buildIn = async (request: BuildRequest, inputs: ResolvedInputs, context: Omit<PartContext, 'signal'>): Promise<BuildResult> => {
	const {deps: {driver, reporter, signal}, phases} = context;
	const {agent, scratch, forget} = await runPart(request, inputs, {...context, signal});
	try {
		const image = await readExportedImage(scratch.outDir, signal);
		await deliverOutputs({request, image, driver, outDir: scratch.outDir, phases, reporter, ...(signal === undefined ? {} : {signal})});
		return {
			digest: agent.result.digest,
			platforms: agent.result.platforms,
			engine: agent.result.engine,
			output: request.output?.dest,
			descriptor: {mediaType: image.top.mediaType, digest: image.top.digest, size: image.top.size},
			configDigest: image.configDigest,
			handlers: agent.handlers,
			steps: agent.steps,
			phaseMs: phases.phaseMs,
		};
	} finally {
		await scratch.remove();
		forget();
	}
};

/** The engine of a node's part: BuildKit's plan against the node (no daemon in the sandbox). */
const nodeEngine = (decision: EngineDecision, node: NodeRecord): EngineDecision => ({
	warnings: [],
	engine: {
		...decision.engine,
		plan: (request, layout) => planRemoteBuildKit(request, layout, {name: node.name, address: node.address, client: buildctlArgv(nodeTarget(node))}),
	},
});

/**
 * A node's own cache folders under --cache-from/--cache-to (node-NAME inside each): the node's
 * solve exports and imports its cache through the session, apart from the local one. With the
 * project cache, the node's own BuildKit state is its cache.
 */
const nodeCache = async (cache: CacheFolders, node: NodeRecord): Promise<CacheFolders> => {
	const from = cache.from === undefined ? undefined : path.join(cache.from, `node-${node.name}`);
	const to = cache.to === undefined ? undefined : path.join(cache.to, `node-${node.name}`);
	if (to !== undefined) {
		await fs.mkdir(to, {recursive: true});
	}

	const fromExists = from !== undefined && await fs.stat(from).then(stat => stat.isDirectory(), () => false);
	return {...(fromExists ? {from} : {}), ...(to === undefined ? {} : {to})};
};

/**
 * A build routed to nodes: every part (the local sandbox's platforms, one per node) at the same
 * time, each in a sandbox of its own; the first part that fails stops the others (their
 * sandboxes are torn down, which kills buildctl and so cancels the node's solve), and nothing is
 * delivered. The layouts are merged into one (src/oci/merge.ts) that goes through the outputs
 * as a local build's does.
 */
const buildRouted = async (request: BuildRequest, inputs: ResolvedInputs, routes: RoutePlan, context: Omit<PartContext, 'signal'>): Promise<BuildResult> => {
	const {deps: {driver, reporter, signal}, phases} = context;
	const stopParts = new AbortController();
	let firstError: unknown;
	const onAbort = (): void => stopParts.abort(signal?.reason);
	if (signal?.aborted) {
		onAbort();
	}

	signal?.addEventListener('abort', onAbort, {once: true});
	const partPhases = hostPhases(reporter, stopParts.signal, context.deps.now);
	const parts = [
		...(routes.local.length === 0 ? [] : [{node: undefined, platforms: routes.local, label: 'the local sandbox'}]),
		...routes.nodes.map(part => ({node: part.node, platforms: part.platforms, label: `node ${part.node.name} (${part.node.address})`})),
	];
	const settled = await Promise.allSettled(parts.map(async (part, index) => {
		const partRequest: BuildRequest = {...request, platforms: part.platforms, engineOptions: {...request.engineOptions, annotations: manifestAnnotations(request.engineOptions.annotations)}};
		try {
			return await runPart(partRequest, inputs, {
				...context,
				phases: partPhases,
				signal: stopParts.signal,
				stepIdOffset: index * 1000,
				label: {...(part.platforms.length === 1 ? {platform: part.platforms[0]!.id} : {}), ...(part.node === undefined ? {} : {node: part.node.name})},
				...(part.node === undefined ? {} : {node: part.node, engine: nodeEngine(context.engine, part.node), cache: await nodeCache(context.cache, part.node)}),
			});
		} catch (error) {
			firstError ??= error;
			stopParts.abort(error);
			throw error;
		}
	}));
	signal?.removeEventListener('abort', onAbort);
	for (const [phase, ms] of Object.entries(partPhases.phaseMs)) {
		phases.add(phase, ms);
	}

	const runs = settled.flatMap(outcome => (outcome.status === 'fulfilled' ? [outcome.value] : []));
	try {
		if (runs.length < parts.length) {
			throw signal?.aborted ? abortReason(signal) : firstError;
		}

		return await mergeAndDeliver(request, runs.map((run, index) => producedLayout(path.join(run.scratch.outDir, 'oci-layout'), parts[index]!.label)), {
			...context, steps: runs.flatMap(run => run.agent.steps), handlers: parts[0]?.node === undefined ? runs[0]!.agent.handlers : [], routes,
		});
	} finally {
		for (const run of runs) {
			await run.scratch.remove();
			run.forget();
		}
	}
};

/** The parts' layouts merged into one in a scratch folder of its own, delivered as a local build's layout is. */
const mergeAndDeliver = async (request: BuildRequest, layouts: readonly LayoutSource[], context: Omit<PartContext, 'signal'> & {
	readonly steps: BuildResult['steps'];
	/** The handlers that built: the local sandbox's (a node's sandbox only registers them, its node builds). */
	readonly handlers: BuildResult['handlers'];
	readonly routes: RoutePlan;
}): Promise<BuildResult> => {
	const {deps: {driver, reporter, signal}, phases, routes} = context;
	const merged = await createHostScratch(newSessionId());
	const forgetMerged = addExitCleanup(merged.remove);
	try {
		await phases.run('merge', async () => mergeLayouts(
			layouts,
			path.join(merged.outDir, 'oci-layout'),
			{platforms: request.platforms.map(platform => platform.id), annotations: request.engineOptions.annotations, ...(signal === undefined ? {} : {signal})},
		), layout => `${layout.images.length} platforms from ${layouts.length} parts`);
		const image = await readExportedImage(merged.outDir, signal);
		await deliverOutputs({request, image, driver, outDir: merged.outDir, phases, reporter, ...(signal === undefined ? {} : {signal})});
		return {
			digest: image.top.digest,
			platforms: request.platforms.map(platform => platform.id),
			engine: 'buildkit',
			output: request.output?.dest,
			descriptor: {mediaType: image.top.mediaType, digest: image.top.digest, size: image.top.size},
			configDigest: image.configDigest,
			handlers: context.handlers,
			steps: context.steps,
			phaseMs: phases.phaseMs,
			nodes: routes.nodes.map(part => ({name: part.node.name, address: part.node.address, platforms: part.platforms.map(platform => platform.id)})),
		};
	} finally {
		await merged.remove();
		forgetMerged();
	}
};

/** Every node of `planned` asked (src/pipeline/routing.ts) as the `nodes` phase; no nodes: nothing asked. */
const askNodes = async (request: BuildRequest, planned: RoutePlan, context: {readonly deps: BuildDeps; readonly phases: HostPhases; readonly builderImage: BuilderImage}): Promise<RoutePlan> => {
	const {deps: {driver, reporter, signal}} = context;
	if (planned.nodes.length === 0) {
		return planned;
	}

	return context.phases.run('nodes', async () => checkNodes(planned, {
		fallback: request.routing?.fallback ?? 'none',
		order: request.platforms,
		warn: message => reporter.report({kind: 'warning', message}),
		probe: async node => probeNode(node, {driver, builder: context.builderImage, signal, env: context.deps.env ?? process.env}),
	}), plan => plan.nodes.map(part => `${part.platforms.map(platform => platform.id).join(',')} @${part.node.name}`).join('; ') || 'none answered: all local');
};

export const runBuild = async (request: BuildRequest, deps: BuildDeps): Promise<BuildResult> => {
	const {driver, builders, reporter, signal} = deps;
	const phases = hostPhases(reporter, signal, deps.now);

	// Validate every named context against the requested platforms before anything starts.
	const inputs = await resolveInputs(request, signal);
	if (request.load && driver.loadImage === undefined) {
		throw new UserError(`--load: the ${driver.name} driver has no image store to load into`, {
			hint: 'write the image with --output type=oci,dest=FILE instead (--load is for --driver apple-container)',
			code: 'E_USAGE',
		});
	}

	// Which node builds which platform (nodes.json, --node), read before anything starts.
	const plannedRoutes = planRoutes(request, await readNodes(deps.env ?? process.env));
	await abortable(driver.features(), signal);
	// The builder image's record decides what its engine can do, before any sandbox (or a long make) starts.
	const planned = await abortable(findOrPlanBuilder(builders, driver), signal);
	const decide = (builder: PlannedBuilder): EngineDecision => decideEngine(request, builder, inputs.bases);
	let engine = decide(planned);
	refuseRouted(request, engine.engine.name, plannedRoutes);
	await phases.run('reap-orphans', async () => {
		const [sandboxes, scratch, partials] = await Promise.all([driver.reapOrphans(), reapHostScratch(), reapPartials()]);
		return sandboxes.removed.length + scratch.length + partials.length;
	}, count => (count > 0 ? `removed ${count} left by killed runs` : undefined));

	const builderImage = await phases.run('builder-image', async () => planned.image ?? builders.ensure({
		driver,
		...(signal === undefined ? {} : {signal}),
		onProgress(step, detail) {
			reporter.report({kind: 'host-phase', phase: 'builder-image', state: 'start', detail: detail ? `${step}: ${detail}` : step});
		},
	}), image => `${image.inputHash.slice(0, 12)}`);
	if (planned.image === undefined) {
		// The builder made (or found meanwhile) may not be the kind planned: decided again by what it is.
		engine = decide({kind: builderImage.kind, reference: builderImage.reference, image: builderImage});
	}

	for (const message of engine.warnings) {
		reporter.report({kind: 'warning', message});
	}

	refuseRouted(request, engine.engine.name, plannedRoutes);
	const routes = await askNodes(request, plannedRoutes, {deps, phases, builderImage});
	const build = async (cache: CacheFolders): Promise<BuildResult> => (routes.nodes.length === 0
		? buildIn(request, inputs, {deps, phases, builderImage, engine, cache})
		: buildRouted(request, inputs, routes, {deps, phases, builderImage, engine, cache}));
	// BuildKit keeps its whole root between builds where the driver can keep it (./engine-state.ts;
	// a host folder, or a volume of the driver's own) and some platforms build locally: that state
	// is the cache, so the project cache (a local cache export of every layer) is not made;
	// --cache-to/--cache-from still export and import where the user names them.
	const keeping = engine.engine.name === 'buildkit' && routes.local.length > 0 ? driver.engineState : undefined;
	const volumes = keeping?.kind === 'volume' ? keeping.volumes : undefined;
	const unavailable = volumes === undefined ? undefined : await abortable(volumes.unavailable(), signal);
	if (unavailable !== undefined) {
		reporter.report({kind: 'warning', message: `BuildKit's state is not kept between builds: ${unavailable}`});
	}

	const keepsState = keeping !== undefined && unavailable === undefined;
	const run = keepsState
		? async (cache: CacheFolders): Promise<BuildResult> => withEngineState({
			onWait() {
				reporter.report({kind: 'warning', message: 'waiting for a BuildKit state slot: every slot is in use by other builds'});
			},
			onWarning(message) {
				reporter.report({kind: 'warning', message});
			},
			...(volumes === undefined ? {} : {volumes}),
		}, async slot => build({...cache, engineState: 'volume' in slot ? {volume: slot.volume} : {hostPath: slot.root}}), signal)
		: build;
	if (request.cache.kind === 'project' && keepsState) {
		return run({});
	}

	if (request.cache.kind === 'project') {
		return withProjectCache(request.contextDir, request.dockerfile, () => {
			reporter.report({kind: 'warning', message: 'waiting for another build of this project to finish: its cache is in use'});
		}, async data => run({dir: data}), signal);
	}

	const {from, to} = request.cache;
	if (to !== undefined) {
		await fs.mkdir(to, {recursive: true});
	}

	// One folder as both --cache-from and --cache-to stays two mounts: BuildKit reads and writes
	// the folder itself (buildx's layout), buildah keeps its storage under the written one.
	return run({...(from === undefined ? {} : {from}), ...(to === undefined ? {} : {to})});
};
