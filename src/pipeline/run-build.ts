/**
 * One build, from a validated request to an OCI archive: resolve base images, make sure the
 * builder image exists, boot a sandbox, run the agent, tear the sandbox down, write the archive.
 * Everything created here is removed in `finally` blocks; what a hard kill leaves behind is
 * removed by the next run's reaping phase.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {parseAgentLine, type AgentEvent, type AgentEventOf} from '../agent/contract.js';
import {builderEngines, ensureBuilderImage, findBuilderImage, type BuilderImage} from '../builder-image/index.js';
import {UserError, userErrorOf, errorTable} from '../errors.js';
import {addExitCleanup} from '../runs/exit-cleanups.js';
import {packLayoutToArchive, readIndexJson, readManifest, resolvePlatformManifests, writePlatformView} from '../oci/index.js';
import {isIndexMediaType} from '../oci/schema.js';
import {resolveFileDestination, writeOutput} from '../outputs/index.js';
import {pushLayout} from '../outputs/registry-push.js';
import type {BuildReporter, HostPhase} from '../progress/events.js';
import {reapPartials} from '../runs/partials.js';
import {StepTracker} from '../progress/steps.js';
import {createRuntime} from '../sandboxes/index.js';
import type {Sandbox, SandboxRuntime} from '../sandboxes/runtime.js';
import {agentArgs, buildMounts, platformSlug, sandboxPaths, secretsBlock, type CacheFolders, type ResolvedBuildContext} from '../agent/agent-args.js';
import {withProjectCache} from './build-cache.js';
import {hintFor} from '../agent/agent-errors.js';
import {refuseForEngine} from '../cli/build-flags/options.js';
import type {BuildRequest} from '../request/build-request.js';
import {createHostScratch, reapHostScratch} from './host-scratch.js';

export interface BuildResult {
	readonly digest: string;
	readonly platforms: readonly string[];
	readonly engine: string;
	readonly output: string | undefined;
	/** The result's top descriptor (an image index for several platforms, a manifest for one). */
	readonly descriptor: {readonly mediaType: string; readonly digest: string; readonly size: number};
	/** The image config's digest (one platform only). */
	readonly configDigest: string | undefined;
	readonly handlers: ReadonlyArray<AgentEventOf<'handler'>>;
	/** The engine's build steps, as read from its output. */
	readonly steps: ReadonlyArray<{readonly name: string; readonly platform: string | undefined; readonly cached: boolean; readonly ms: number | undefined}>;
	/** Milliseconds per phase (host and agent phases; per-platform phases summed). */
	readonly phaseMs: Readonly<Record<string, number>>;
}

export const newSessionId = (): string => `exo-${Date.now().toString(36)}-${crypto.randomBytes(4).toString('hex')}`;

const interrupted = (): UserError => new UserError('build interrupted', {hint: 'everything the build started was removed', exitCode: 130, code: 'E_INTERRUPTED'});

/** The reason `signal` was aborted with (the stop signal's UserError), else a generic one. */
const abortReason = (signal: AbortSignal): unknown => (signal.reason instanceof UserError ? signal.reason : interrupted());

/**
 * `work`, or the abort's reason as soon as `signal` aborts: a host step that does not listen to
 * the signal itself (a read of a layout, an unpack, an output stream) no longer holds the run.
 * What it leaves is removed by its own cleanup or by the exit cleanups.
 */
export const abortable = async <T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> => {
	if (signal === undefined) {
		return work;
	}

	if (signal.aborted) {
		work.catch(() => undefined);
		throw abortReason(signal);
	}

	let onAbort: (() => void) | undefined;
	const aborted = new Promise<never>((_resolve, reject) => {
		onAbort = () => reject(abortReason(signal));
		signal.addEventListener('abort', onAbort, {once: true});
	});
	try {
		return await Promise.race([work, aborted]);
	} finally {
		signal.removeEventListener('abort', onAbort!);
		work.catch(() => undefined);
	}
};

/**
 * Whether the builder has BuildKit, from its record (builderEngines: a containerfile builder
 * has it, a distro builder when it was made with a BuildKit tarball). A builder still to be made
 * (a kind only) may get BuildKit, so it passes here and is checked again once it is made.
 */
const builderHasBuildKit = (builder: BuilderImage | BuilderImage['kind']): boolean => typeof builder === 'string' || builderEngines(builder).includes('buildkit');

/**
 * The engine checks that need the builder image, made from its record before any sandbox
 * starts: --engine buildkit on a builder without it, and what buildah cannot do when `auto`
 * chooses buildah. A builder still to be made is judged by the kind the runtime would make.
 */
const checkEngineAgainstBuilder = (request: BuildRequest, builder: BuilderImage | BuilderImage['kind'], reference: string): void => {
	const kind = typeof builder === 'string' ? builder : builder.kind;
	const hasBuildKit = builderHasBuildKit(builder);
	if (request.engine === 'buildkit' && !hasBuildKit) {
		throw new UserError(`--engine buildkit: the builder image ${reference} has no BuildKit (a ${kind} builder has buildah only)`, {
			hint: 'drop --engine buildkit (buildah builds it), or make a builder with BuildKit (`exobuild builder build --buildkit FILE|URL`; see docs/buildkit.md)',
			code: 'E_ENGINE_MISSING', exitCode: 2,
		});
	}

	if (request.engine === 'auto' && !hasBuildKit) {
		refuseForEngine(request, 'buildah', `the builder image ${reference} has buildah only`);
	}
};

const findOrPlanBuilder = async (runtime: SandboxRuntime): Promise<{kind: BuilderImage['kind']; reference: string; image: BuilderImage | undefined}> => {
	const image = await findBuilderImage({});
	if (image !== undefined) {
		return {kind: image.kind, reference: image.reference, image};
	}

	const kind = runtime.buildImage === undefined ? 'distro' : 'containerfile';
	return {kind, reference: `(a ${kind} builder, to be made)`, image: undefined};
};

/** A full disk while writing `dest` says so, naming the folder (an fd write error names no path). */
const withDest = (error: unknown, dest: string): unknown => {
	const code = (error as NodeJS.ErrnoException | undefined)?.code;
	if ((code === 'ENOSPC' || code === 'EDQUOT') && (error as NodeJS.ErrnoException).path === undefined) {
		return userErrorOf(Object.assign(error as Error, {path: path.dirname(dest)})) ?? error;
	}

	return error;
};

export const runBuild = async (request: BuildRequest, options: {reporter: BuildReporter; signal?: AbortSignal}): Promise<BuildResult> => {
	const {reporter, signal} = options;
	const phaseMs: Record<string, number> = {};
	const hostPhase = async <T>(phase: HostPhase, run: () => Promise<T>, detail?: (value: T) => string | undefined): Promise<T> => {
		if (signal?.aborted) {
			throw abortReason(signal);
		}

		const started = performance.now();
		reporter.report({kind: 'host-phase', phase, state: 'start'});
		const value = await abortable(run(), signal);
		const ms = Math.round(performance.now() - started);
		phaseMs[phase] = (phaseMs[phase] ?? 0) + ms;
		const text = detail?.(value);
		reporter.report({kind: 'host-phase', phase, state: 'end', ms, ...(text === undefined ? {} : {detail: text})});
		return value;
	};

	// Validate every named context against the requested platforms before anything starts.
	const platformIds = request.platforms.map(platform => platform.id);
	const resolved = await abortable(Promise.all(request.buildContexts.map(async context => {
		const manifests = await resolvePlatformManifests(context.layoutDir, platformIds, {name: context.name, ref: context.ref, digest: context.digest});
		return {context, manifests};
	})), signal);

	const runtime = createRuntime(request.driver, request.runtimeOptions);
	if (request.load && runtime.loadImage === undefined) {
		throw new UserError(`--load: the ${runtime.name} driver has no image store to load into`, {
			hint: 'write the image with --output type=oci,dest=FILE instead (--load is for --driver apple-container)',
			code: 'E_USAGE',
		});
	}

	await abortable(runtime.features(), signal);
	// The builder image's record decides what its engine can do, before any sandbox (or a long make) starts.
	const planned = await abortable(findOrPlanBuilder(runtime), signal);
	checkEngineAgainstBuilder(request, planned.image ?? planned.kind, planned.reference);
	await hostPhase('reap-orphans', async () => {
		const [sandboxes, scratch, partials] = await Promise.all([runtime.reapOrphans(), reapHostScratch(), reapPartials()]);
		return sandboxes.removed.length + scratch.length + partials.length;
	}, count => (count > 0 ? `removed ${count} left by killed runs` : undefined));

	const builderImage = await hostPhase('builder-image', async () => planned.image ?? ensureBuilderImage({
		runtime,
		...(signal === undefined ? {} : {signal}),
		onProgress(step, detail) {
			reporter.report({kind: 'host-phase', phase: 'builder-image', state: 'start', detail: detail ? `${step}: ${detail}` : step});
		},
	}), image => `${image.inputHash.slice(0, 12)}`);
	if (planned.image === undefined) {
		checkEngineAgainstBuilder(request, builderImage, builderImage.reference);
	}

	const buildIn = async (cache: CacheFolders): Promise<BuildResult> => {
		const sessionId = newSessionId();
		const scratch = await createHostScratch(sessionId);
		const forgetScratch = addExitCleanup(scratch.remove);
		// A Dockerfile from stdin becomes a file in the scratch folder. Secrets never do: src=
		// files are mounted read-only, env= values go to the agent on its stdin (secretsBlock).
		let effective = request;
		const secretFiles = new Map<string, string>();
		let sandbox: Sandbox | undefined;
		let forgetSandbox: (() => void) | undefined;
		try {
			if (request.dockerfileText !== undefined) {
				await fs.mkdir(path.join(scratch.root, 'dockerfile'));
				const dockerfile = path.join(scratch.root, 'dockerfile', 'Dockerfile');
				await fs.writeFile(dockerfile, request.dockerfileText);
				effective = {...request, dockerfile};
			}

			for (const secret of request.engineOptions.secrets) {
				if (secret.src !== undefined) {
					secretFiles.set(secret.id, secret.src);
				}
			}

			const contexts: ResolvedBuildContext[] = [];
			for (const [index, {context, manifests}] of resolved.entries()) {
				contexts.push({name: context.name, layoutDir: context.layoutDir, topDigest: manifests.topDigest});
				for (const platformId of platformIds) {
					const descriptor = manifests.platforms.get(platformId);
					if (descriptor === undefined) {
						throw new Error(`internal: no manifest resolved for ${platformId} in ${context.layoutDir}`);
					}

					// eslint-disable-next-line no-await-in-loop
					await writePlatformView(descriptor, `${scratch.viewsDir}/${index}/${platformSlug(platformId)}`, `${sandboxPaths.contexts}/${index}/blobs`, context.name);
				}
			}

			const starting = runtime.start({sessionId, builderImage, mounts: buildMounts(effective, contexts, scratch, cache, secretFiles), ...(signal === undefined ? {} : {signal})});
			try {
				sandbox = await hostPhase('sandbox-start', async () => starting, box => box.id);
			} catch (error) {
				// An abort stopped waiting for the start: the sandbox is stopped once it is up.
				void starting.then(async box => box.stop(), () => undefined);
				throw error;
			}

			const started = sandbox;
			forgetSandbox = addExitCleanup(async () => started.stop());

			let result: AgentEventOf<'result'> | undefined;
			let failure: AgentEventOf<'error'> | undefined;
			let protocolError: Error | undefined;
			let lastStderr: string | undefined;
			const handlers: Array<AgentEventOf<'handler'>> = [];
			const steps = new StepTracker();
			const onEvent = (event: AgentEvent): void => {
				if (event.event === 'result') {
					result = event;
				} else if (event.event === 'error') {
					failure = event;
				} else if (event.event === 'handler') {
					handlers.push(event);
				} else if (event.event === 'phase-end') {
					phaseMs[event.phase] = (phaseMs[event.phase] ?? 0) + event.ms;
				}

				reporter.report({kind: 'agent', event});
				const changes = event.event === 'log' && event.source === 'engine'
					? steps.onLine(event.platform, event.line)
					: (event.event === 'phase-end' && event.phase === 'build' ? steps.end() : []);
				for (const {step, state} of changes) {
					reporter.report({
						kind: 'step', id: steps.steps.indexOf(step) + 1, name: step.name, state, cached: step.cached,
						...(step.platform === undefined ? {} : {platform: step.platform}), ...(step.ms === undefined ? {} : {ms: step.ms}),
					});
				}
			};

			const secrets = secretsBlock(request.engineOptions.secrets, process.env);
			const exit = await sandbox.runAgent({
				args: agentArgs(effective, contexts, cache),
				...(secrets === undefined ? {} : {stdin: secrets}),
				onStdoutLine(line) {
					if (line.trim() === '') {
						return;
					}

					try {
						onEvent(parseAgentLine(line));
					} catch (error) {
						protocolError ??= error as Error;
					}
				},
				onStderrLine(line) {
					if (line.trim() !== '') {
						lastStderr = line.trim();
					}

					reporter.report({kind: 'agent-stderr', line});
				},
				...(signal === undefined ? {} : {signal}),
			});

			if (signal?.aborted) {
				throw abortReason(signal);
			}

			if (failure !== undefined) {
				throw new UserError(`${failure.platform ? `${failure.platform}: ` : ''}${failure.message}`, {hint: hintFor(failure.code), exitCode: errorTable[failure.code].exitCode, code: failure.code});
			}

			if (protocolError !== undefined) {
				throw new UserError(`the agent broke the event contract: ${protocolError.message}`, {hint: 'the builder image and this exobuild do not match; run `exobuild builder build --force`', exitCode: 1, code: 'E_PROTOCOL', cause: protocolError});
			}

			if (result === undefined || exit.exitCode !== 0) {
				throw new UserError(`the agent ended without a result (exit code ${exit.exitCode ?? '-'}${exit.signal ? `, signal ${exit.signal}` : ''})${lastStderr === undefined ? '' : `: ${lastStderr}`}`, {hint: 'run with --progress plain to see its output; the engine may have crashed', exitCode: 1, code: 'E_AGENT_CRASHED'});
			}

			const finalResult = result;
			await hostPhase('teardown', async () => {
				await sandbox?.stop();
				sandbox = undefined;
				forgetSandbox?.();
			});

			const layout = `${scratch.outDir}/oci-layout`;
			const [top] = (await abortable(readIndexJson(layout), signal)).manifests;
			if (top === undefined) {
				throw new UserError('the engine wrote an empty OCI layout', {hint: 'run with --progress plain to see its output', exitCode: 1, code: 'E_EXPORT_FAILED'});
			}

			const configDigest = isIndexMediaType(top.mediaType) ? undefined : (await abortable(readManifest(layout, top), signal)).config.digest;
			const {output} = request;
			if (output !== undefined || request.load) {
				if (output !== undefined) {
					const platforms = request.platforms.map(platform => platform.id);
					await hostPhase('archive', async () => writeOutput(layout, output, {tags: request.tags, platforms, ...(signal === undefined ? {} : {signal})}).catch((error: unknown) => {
						throw output.dest === '-' ? error : withDest(error, output.dest);
					}), () => `type=${output.type} ${output.dest === '-' ? 'to stdout' : output.dest}`);
				}

				if (request.load && runtime.loadImage !== undefined) {
					// The store takes an OCI archive: the output itself if it is one, else one made for it.
					const archive = output?.type === 'oci' && output.tar !== false && resolveFileDestination(output.dest).kind === 'replace' ? output.dest : `${scratch.outDir}/load.tar`;
					if (archive !== output?.dest) {
						await abortable(packLayoutToArchive(layout, archive, {tags: request.tags}), signal);
					}

					const load = runtime.loadImage;
					const report = await hostPhase('load', async () => load(archive, request.tags), loaded => loaded.loaded.join(', '));
					for (const note of report.notes) {
						reporter.report({kind: 'warning', message: note});
					}
				}
			} else if (!request.push) {
				reporter.report({kind: 'warning', message: 'no --output given: the image was discarded with the sandbox. Add --output type=oci,dest=FILE (or docker, local, tar) to keep it.'});
			}

			if (request.push) {
				await hostPhase('push', async () => {
					for (const tag of request.tags) {
						// eslint-disable-next-line no-await-in-loop
						await pushLayout(layout, tag);
					}
				}, () => request.tags.join(', '));
			}

			return {
				digest: finalResult.digest,
				platforms: finalResult.platforms,
				engine: finalResult.engine,
				output: request.output?.dest,
				descriptor: {mediaType: top.mediaType, digest: top.digest, size: top.size},
				configDigest,
				handlers,
				steps: steps.steps.map(({name, platform, cached, ms}) => ({name, platform, cached, ms})),
				phaseMs,
			};
		} finally {
			if (sandbox !== undefined) {
				const box = sandbox;
				// Not through hostPhase: after an abort it would refuse to start, and the teardown must run.
				reporter.report({kind: 'host-phase', phase: 'teardown', state: 'start'});
				await box.stop();
				reporter.report({kind: 'host-phase', phase: 'teardown', state: 'end'});
				forgetSandbox?.();
			}

			await scratch.remove();
			forgetScratch();
		}
	};

	if (request.cache.kind === 'project') {
		return withProjectCache(request.contextDir, request.dockerfile, () => {
			reporter.report({kind: 'warning', message: 'waiting for another build of this project to finish: its cache is in use'});
		}, async data => buildIn({dir: data}), signal);
	}

	const {from, to} = request.cache;
	if (to !== undefined) {
		await fs.mkdir(to, {recursive: true});
	}

	return buildIn(from !== undefined && from === to ? {dir: from} : {...(from === undefined ? {} : {from}), ...(to === undefined ? {} : {to})});
};
