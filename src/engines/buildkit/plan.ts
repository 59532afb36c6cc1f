/**
 * BuildKit's whole work for a request: buildkitd in the sandbox, readiness and platform checks
 * with buildctl, and one `buildctl build` for every platform. The translation of each option
 * follows docker/buildx's toSolveOpt (build/opt.go) onto buildctl's flags (cmd/buildctl/build.go,
 * moby/buildkit v0.32.2). Pure: no I/O.
 */
import {buildkitAnnotationAttribute, parseAnnotations} from '../../oci/annotations.js';
import type {BuildRequest} from '../../request/build-request.js';
import {csvField, required, splitPath} from '../argv-values.js';
import type {EnginePlan, EngineStep, SandboxLayout} from '../plan.js';

export const buildkitAddress = 'unix:///run/buildkit/buildkitd.sock';
export const buildkitConfig = '/etc/buildkit/buildkitd.toml';
/** How long buildkitd may take to answer (measured: ~0.2 s with an empty root). */
export const buildkitReadyTimeoutMs = 60_000;

const buildctl = ['buildctl', '--addr', buildkitAddress] as const;

/**
 * What `buildctl debug workers --format '{{json .}}'` prints for a platform the worker has: its
 * OCI architecture. Worker platforms are not normalised (arm is listed without its variant:
 * docs in ../shared/notes/buildkit.md, measured with v0.32.2), so the variant is not expected.
 * The closing quote keeps "arm" from matching "arm64".
 */
export const workerPlatformText = (architecture: string): string => `"architecture":"${architecture}"`;

/** `--provenance=true` is BuildKit's default mode, min (buildx: docs/reference/buildx_build.md#provenance). */
const provenanceAttrs = (value: string): string => (value === 'true' ? 'mode=min' : value);

/** The import and export of BuildKit's cache: the folders of the request, or buildkit/ in the project's cache. */
const cacheArgs = (cache: SandboxLayout['cache']): string[] => {
	const importFrom = cache.from ?? (cache.dir === undefined ? undefined : `${cache.dir}/buildkit`);
	const exportTo = cache.to ?? (cache.dir === undefined ? undefined : `${cache.dir}/buildkit`);
	return [
		...(importFrom === undefined || cache.importable === false ? [] : ['--import-cache', `type=local,src=${importFrom}`]),
		...(exportTo === undefined ? [] : ['--export-cache', `type=local,mode=max,dest=${exportTo}`]),
	];
};

/**
 * `buildctl … build` for the request. `client`: buildctl and its connection flags (default: the
 * sandbox's own buildkitd; a node's address and TLS flags for a routed part, src/nodes/probe.ts).
 */
export const buildctlBuildArgs = (request: BuildRequest, layout: SandboxLayout, client: readonly string[] = buildctl): string[] => {
	const options = request.engineOptions;
	const dockerfile = splitPath(layout.dockerfile);
	const epoch = options.sourceDateEpoch;
	const output = [
		'type=oci', 'tar=false', `dest=${layout.outputLayout}`,
		...(epoch === undefined ? [] : ['rewrite-timestamp=true']),
		// buildx's TYPE[PLATFORM]:KEY becomes BuildKit's exporter attribute (annotation-index.KEY, …).
		...parseAnnotations(options.annotations).map(annotation => `${buildkitAnnotationAttribute(annotation)}=${annotation.value}`),
	].map(csvField).join(',');
	return [
		...client, 'build', '--frontend', 'dockerfile.v0',
		'--local', `context=${layout.context}`, '--local', `dockerfile=${dockerfile.dir}`,
		'--opt', `filename=${dockerfile.base}`, '--opt', `platform=${request.platforms.map(platform => platform.id).join(',')}`,
		...(request.target === undefined ? [] : ['--opt', `target=${request.target}`]),
		...(request.noCache ? ['--no-cache'] : []),
		...(options.noCacheFilter.length === 0 ? [] : ['--opt', `no-cache=${options.noCacheFilter.join(',')}`]),
		...(options.pull ? ['--opt', 'image-resolve-mode=pull'] : []),
		...(options.network === 'none' ? ['--opt', 'force-network-mode=none'] : []),
		...(options.network === 'host' ? ['--opt', 'force-network-mode=host', '--allow', 'network.host'] : []),
		...(options.shmSize === undefined ? [] : ['--opt', `shm-size=${options.shmSize}`]),
		...(options.provenance === undefined ? [] : ['--opt', `attest:provenance=${provenanceAttrs(options.provenance)}`]),
		...(epoch === undefined ? [] : ['--opt', `build-arg:SOURCE_DATE_EPOCH=${epoch}`]),
		// The dockerfile frontend reads add-hosts as a CSV list of HOST=IP (an IPv6 address stays whole).
		...(options.addHosts.length === 0 ? [] : ['--opt', `add-hosts=${options.addHosts.map(([host, ip]) => `${host}=${ip}`).join(',')}`]),
		...(options.ulimits.length === 0 ? [] : ['--opt', `ulimit=${options.ulimits.join(',')}`]),
		...request.buildArgs.flatMap(([key, value]) => ['--opt', `build-arg:${key}=${value}`]),
		...options.labels.flatMap(([key, value]) => ['--opt', `label:${key}=${value}`]),
		...options.secrets.flatMap(secret => ['--secret', `id=${secret.id},src=${required(layout.secretFiles.get(secret.id), `file for secret ${secret.id}`)}`]),
		...options.ssh.flatMap(source => ['--ssh', `${source.id}=${required(layout.sshSources.get(source.id), `path for --ssh ${source.id}`)}`]),
		...options.localContexts.flatMap(([name]) => ['--local', `${name}=${required(layout.localContexts.get(name), `folder for context ${name}`)}`, '--opt', `context:${name}=local:${name}`]),
		// Bases from OCI layouts: BuildKit reads the layout itself (digest mandatory).
		...layout.bases.flatMap((base, index) => ['--oci-layout', `base${index}=${base.layout}`, '--opt', `context:${base.name}=oci-layout://base${index}@${base.topDigest}`]),
		...cacheArgs(layout.cache),
		'--output', output,
		'--progress', request.progress === 'rawjson' ? 'rawjson' : 'plain',
		'--metadata-file', `${layout.state}/metadata.json`,
	];
};

export const planBuildKit = (request: BuildRequest, layout: SandboxLayout): EnginePlan => {
	const steps: EngineStep[] = [
		{
			kind: 'daemon',
			argv: [
				'buildkitd', '--addr', buildkitAddress, '--root', layout.engineState ?? `${layout.state}/buildkit`,
				'--oci-worker=true', '--containerd-worker=false', '--config', buildkitConfig,
				...(request.engineOptions.network === 'host' ? ['--allow-insecure-entitlement', 'network.host'] : []),
			],
			// In a user namespace (the linux-userns sandbox) rootful buildkitd fails the first RUN.
			rootlessArgs: ['--rootless'],
		},
		{kind: 'ready', argv: [...buildctl, 'debug', 'workers'], timeoutMs: buildkitReadyTimeoutMs},
		{kind: 'version', argv: ['buildkitd', '--version']},
		{
			kind: 'platforms',
			argv: [...buildctl, 'debug', 'workers', '--format', '{{json .}}'],
			expect: request.platforms.map(platform => ({platform: platform.id, text: workerPlatformText(platform.architecture)})),
		},
		{
			kind: 'run', phase: 'build', argv: buildctlBuildArgs(request, layout),
			errorCode: 'E_BUILD_FAILED', message: 'the build failed (buildctl)', watch: true,
		},
	];
	return {engine: 'buildkit', steps, tmpfs: []};
};

/**
 * The plan of one routed part (src/pipeline/routing.ts): no daemon, no readiness or platform
 * steps (the node was asked before the build), only buildctl's version and the same `buildctl
 * build` as a local build, against the node: `client` is `buildctl --addr NODE [--tls…]`. The
 * build context, secrets, SSH, named contexts and oci-layout:// bases travel through buildctl's
 * session from this sandbox (moby/buildkit v0.32.2 session/: filesync, secrets, sshforward,
 * content store for --oci-layout); the node writes none of them to its disk. The OCI layout is
 * exported back through the session into the sandbox's out folder (exporter type=oci, tar=false).
 */
export const planRemoteBuildKit = (request: BuildRequest, layout: SandboxLayout, node: {readonly name: string; readonly address: string; readonly client: readonly string[]}): EnginePlan => ({
	engine: 'buildkit',
	steps: [
		{kind: 'version', argv: ['buildctl', '--version']},
		{
			kind: 'run', phase: 'build', argv: buildctlBuildArgs(request, layout, node.client),
			errorCode: 'E_BUILD_FAILED', message: `the build on node ${node.name} (${node.address}) failed (buildctl)`, watch: true,
		},
	],
	tmpfs: [],
});
