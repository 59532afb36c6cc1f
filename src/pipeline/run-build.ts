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
import {abortable} from './abort.js';
import {bootSandbox, type BootedSandbox} from './boot.js';
import {withProjectCache} from './build-cache.js';
import {withEngineState} from './engine-state.js';
import type {BuildResult} from './build-result.js';
import type {BuildDeps, BuilderStore} from './deps.js';
import {deliverOutputs, readExportedImage} from './deliver-outputs.js';
import type {EngineDecision} from './engine-decision.js';
import {createHostScratch, reapHostScratch} from './host-scratch.js';
import {hostPhases, type HostPhases} from './host-phases.js';
import {runAgentStage} from './run-agent-stage.js';
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

/** Stages in the scratch folder, boots, runs the agent, tears down and delivers, with `cache` as the engine's cache. */
const buildIn = async (request: BuildRequest, inputs: ResolvedInputs, context: {
	readonly deps: BuildDeps;
	readonly phases: HostPhases;
	readonly builderImage: BuilderImage;
	readonly engine: EngineDecision;
	readonly cache: CacheFolders;
}): Promise<BuildResult> => {
	const {deps: {driver, reporter, signal}, phases, cache} = context;
	const sessionId = newSessionId();
	const scratch = await createHostScratch(sessionId);
	const forgetScratch = addExitCleanup(scratch.remove);
	let booted: BootedSandbox | undefined;
	try {
		const staged = await stageInputs(request, inputs, scratch);
		booted = await bootSandbox(driver, {
			sessionId,
			builderImage: context.builderImage,
			mounts: buildMounts(staged.request, staged.contexts, scratch, cache, staged.secretFiles),
			volumes: buildVolumes(cache),
			...(signal === undefined ? {} : {signal}),
		}, phases);
		const agent = await runAgentStage({
			sandbox: booted.sandbox, staged, cache, engine: context.engine, reporter, phases, env: context.deps.env ?? process.env,
			outDir: scratch.outDir, sessionId, debug: context.deps.debug ?? false, ...(signal === undefined ? {} : {signal}),
		});
		await tearDown(booted, phases);
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
		await tearDownRemaining(booted, reporter);
		await scratch.remove();
		forgetScratch();
	}
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

	await abortable(driver.features(), signal);
	// The builder image's record decides what its engine can do, before any sandbox (or a long make) starts.
	const planned = await abortable(findOrPlanBuilder(builders, driver), signal);
	const decide = (builder: PlannedBuilder): EngineDecision => decideEngine(request, builder, inputs.bases);
	let engine = decide(planned);
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

	const build = async (cache: CacheFolders): Promise<BuildResult> => buildIn(request, inputs, {deps, phases, builderImage, engine, cache});
	// BuildKit keeps its whole root between builds where the driver can keep it (./engine-state.ts;
	// a host folder, or a volume of the driver's own): that state is the cache, so the project
	// cache (a local cache export of every layer) is not made; --cache-to/--cache-from still
	// export and import where the user names them.
	const keeping = engine.engine.name === 'buildkit' ? driver.engineState : undefined;
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
