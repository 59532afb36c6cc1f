/**
 * One build, from a validated request to an OCI archive: resolve base images, make sure the
 * builder image exists, boot a sandbox, run the agent, tear the sandbox down, write the archive.
 * Everything created here is removed in `finally` blocks; what a hard kill leaves behind is
 * removed by the next run's reaping phase.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import {parseAgentLine, type AgentEvent, type AgentEventOf} from '../agent-events/contract.js';
import {ensureBuilderImage} from '../builder-image/index.js';
import {UserError} from '../errors.js';
import {manifestSchema, packLayoutToArchive, readBlob, readIndexJson, resolvePlatformManifests, writePlatformView} from '../oci/index.js';
import {isIndexMediaType} from '../oci/schema.js';
import {resolveFileDestination, writeOutput} from '../outputs/index.js';
import {pushLayout} from '../outputs/registry-push.js';
import type {BuildReporter, HostPhase} from '../progress/events.js';
import {reapPartials} from '../runs/partials.js';
import {StepTracker} from '../progress/steps.js';
import {createRuntime} from '../sandboxes/index.js';
import type {Sandbox} from '../sandboxes/runtime.js';
import {agentArgs, buildMounts, platformSlug, sandboxPaths, type CacheFolders, type ResolvedBuildContext} from './agent-args.js';
import {withProjectCache} from './build-cache.js';
import {hintFor} from './agent-errors.js';
import type {BuildRequest} from './request.js';
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

export const runBuild = async (request: BuildRequest, options: {reporter: BuildReporter; signal?: AbortSignal}): Promise<BuildResult> => {
	const {reporter, signal} = options;
	const phaseMs: Record<string, number> = {};
	const hostPhase = async <T>(phase: HostPhase, run: () => Promise<T>, detail?: (value: T) => string | undefined): Promise<T> => {
		if (signal?.aborted) {
			throw interrupted();
		}

		const started = performance.now();
		reporter.report({kind: 'host-phase', phase, state: 'start'});
		const value = await run();
		const ms = Math.round(performance.now() - started);
		phaseMs[phase] = (phaseMs[phase] ?? 0) + ms;
		const text = detail?.(value);
		reporter.report({kind: 'host-phase', phase, state: 'end', ms, ...(text === undefined ? {} : {detail: text})});
		return value;
	};

	// Validate every named context against the requested platforms before anything starts.
	const platformIds = request.platforms.map(platform => platform.id);
	const resolved = await Promise.all(request.buildContexts.map(async context => {
		const manifests = await resolvePlatformManifests(context.layoutDir, platformIds, {name: context.name, ref: context.ref, digest: context.digest});
		return {context, manifests};
	}));

	const runtime = createRuntime(request.driver, request.runtimeOptions);
	if (request.load && runtime.loadImage === undefined) {
		throw new UserError(`--load: the ${runtime.name} driver has no image store to load into`, {
			hint: 'write the image with --output type=oci,dest=FILE instead (--load is for --driver apple-container)',
			code: 'E_USAGE',
		});
	}

	await runtime.features();
	await hostPhase('reap-orphans', async () => {
		const [sandboxes, scratch, partials] = await Promise.all([runtime.reapOrphans(), reapHostScratch(), reapPartials()]);
		return sandboxes.removed.length + scratch.length + partials.length;
	}, count => (count > 0 ? `removed ${count} left by killed runs` : undefined));

	const builderImage = await hostPhase('builder-image', async () => ensureBuilderImage({
		runtime,
		...(signal === undefined ? {} : {signal}),
		onProgress(step, detail) {
			reporter.report({kind: 'host-phase', phase: 'builder-image', state: 'start', detail: detail ? `${step}: ${detail}` : step});
		},
	}), image => `${image.inputHash.slice(0, 12)}`);

	const buildIn = async (cache: CacheFolders): Promise<BuildResult> => {
		const sessionId = newSessionId();
		const scratch = await createHostScratch(sessionId);
		// A Dockerfile from stdin and env= secrets become files in the scratch folder (secrets: mode 0600).
		let effective = request;
		const secretFiles = new Map<string, string>();
		let sandbox: Sandbox | undefined;
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
				} else if (secret.env !== undefined) {
					const file = path.join(scratch.root, 'secrets', secret.id);
					// eslint-disable-next-line no-await-in-loop
					await fs.mkdir(path.dirname(file), {recursive: true, mode: 0o700});
					// eslint-disable-next-line no-await-in-loop
					await fs.writeFile(file, process.env[secret.env] ?? '', {mode: 0o600});
					secretFiles.set(secret.id, file);
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

			sandbox = await hostPhase('sandbox-start', async () => runtime.start({sessionId, builderImage, mounts: buildMounts(effective, contexts, scratch, cache, secretFiles)}), box => box.id);

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

			const exit = await sandbox.runAgent({
				args: agentArgs(effective, contexts, cache),
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
				throw interrupted();
			}

			if (failure !== undefined) {
				throw new UserError(`${failure.platform ? `${failure.platform}: ` : ''}${failure.message}`, {hint: hintFor(failure.code), exitCode: 1, code: failure.code});
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
			});

			const layout = `${scratch.outDir}/oci-layout`;
			const [top] = (await readIndexJson(layout)).manifests;
			if (top === undefined) {
				throw new UserError('the engine wrote an empty OCI layout', {hint: 'run with --progress plain to see its output', exitCode: 1, code: 'E_EXPORT_FAILED'});
			}

			const configDigest = isIndexMediaType(top.mediaType) ? undefined : manifestSchema.parse(JSON.parse((await readBlob(layout, top)).toString('utf8'))).config.digest;
			const {output} = request;
			if (output !== undefined || request.load) {
				if (output !== undefined) {
					const platforms = request.platforms.map(platform => platform.id);
					await hostPhase('archive', async () => writeOutput(layout, output, {tags: request.tags, platforms}), () => `type=${output.type} ${output.dest === '-' ? 'to stdout' : output.dest}`);
				}

				if (request.load && runtime.loadImage !== undefined) {
					// The store takes an OCI archive: the output itself if it is one, else one made for it.
					const archive = output?.type === 'oci' && output.tar !== false && resolveFileDestination(output.dest).kind === 'replace' ? output.dest : `${scratch.outDir}/load.tar`;
					if (archive !== output?.dest) {
						await packLayoutToArchive(layout, archive, {tags: request.tags});
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
				await hostPhase('teardown', async () => box.stop()).catch(async () => box.stop());
			}

			await scratch.remove();
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
