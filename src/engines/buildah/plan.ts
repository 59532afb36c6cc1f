/**
 * buildah's whole work for a request: one platform at a time (bases loaded from one-platform
 * views of their OCI layouts, then `buildah build`), then the images written as one OCI layout.
 * Pure: no I/O.
 *
 * Its cache is its image storage (every layer of every step, with --layers), kept in the cache
 * folder the host shares so that it outlives the sandbox.
 *
 * What used to be buildah's environment in the agent is argv now: `--isolation chroot` (was
 * BUILDAH_ISOLATION=chroot) and `--storage-driver overlay` (was EXOBUILD_STORAGE_DRIVER, default
 * overlay). `unshare --net --` (--network none) puts buildah itself in a new, empty network
 * namespace: chroot isolation runs steps in buildah's own and refuses --network none.
 */
import {parseAnnotations} from '../../oci/annotations.js';
import type {BuildRequest} from '../../request/build-request.js';
import {required} from '../argv-values.js';
import type {EnginePlan, EngineStep, SandboxLayout} from '../plan.js';

export const storageDriver = 'overlay';
/** The image list of a several-platform build, in buildah's storage. */
export const outputList = 'exobuild-out-list';

/** The image buildah builds for one platform: exobuild-out-linux-arm-v7. */
export const imageName = (platformId: string): string => `exobuild-out-${platformId.replaceAll('/', '-')}`;

/**
 * buildah's storage root: the project's cache folder, or --cache-to's, else this run's scratch.
 * A --cache-from other than --cache-to is refused (./capabilities.ts): buildah must write its
 * cache. With both naming one folder, it is mounted twice (read-only and read-write): the
 * read-write one is the root.
 */
export const buildahRoot = (layout: SandboxLayout): string => {
	const {dir, from, to} = layout.cache;
	if (dir !== undefined) {
		return `${dir}/buildah`;
	}

	if (from !== undefined && to === undefined) {
		throw new Error('engine plan: buildah cannot read a cache it may not write (--cache-from is refused for buildah)');
	}

	return to === undefined ? `${layout.state}/containers` : `${to}/buildah`;
};

const buildahArgs = (layout: SandboxLayout): string[] => ['buildah', '--root', buildahRoot(layout), '--runroot', `${layout.state}/run`, '--storage-driver', storageDriver];

/** `buildah build` for one platform. */
export const buildahBuildArgs = (request: BuildRequest, layout: SandboxLayout, platformId: string): string[] => {
	const options = request.engineOptions;
	// Bases from OCI layouts are loaded fresh for every build (--pull or not); without them,
	// FROM pulls from the image's registry when missing (always, with --pull).
	const pull = layout.bases.length > 0 ? 'never' : (options.pull ? 'always' : 'missing');
	const epoch = options.sourceDateEpoch;
	return [
		...(options.network === 'none' ? ['unshare', '--net', '--'] : []),
		...buildahArgs(layout),
		'build', '--isolation', 'chroot', '--network', 'host', '--platform', platformId, `--pull=${pull}`, '--layers',
		'-f', layout.dockerfile, '-t', imageName(platformId),
		...(request.target === undefined ? [] : ['--target', request.target]),
		...(request.noCache ? ['--no-cache'] : []),
		...(options.shmSize === undefined ? [] : ['--shm-size', String(options.shmSize)]),
		// buildah's --timestamp sets the image's creation time and its files' times.
		...(epoch === undefined ? [] : ['--timestamp', String(epoch), '--build-arg', `SOURCE_DATE_EPOCH=${epoch}`]),
		...request.buildArgs.flatMap(([key, value]) => ['--build-arg', `${key}=${value}`]),
		...options.labels.flatMap(([key, value]) => ['--label', `${key}=${value}`]),
		// Only manifest annotations reach here (typedAnnotations is refused): `manifest:KEY` is KEY.
		...parseAnnotations(options.annotations).flatMap(annotation => ['--annotation', `${annotation.key}=${annotation.value}`]),
		...options.addHosts.flatMap(([host, ip]) => ['--add-host', `${host}:${ip}`]),
		...options.secrets.flatMap(secret => ['--secret', `id=${secret.id},src=${required(layout.secretFiles.get(secret.id), `file for secret ${secret.id}`)}`]),
		...options.ssh.flatMap(source => ['--ssh', `${source.id}=${required(layout.sshSources.get(source.id), `path for --ssh ${source.id}`)}`]),
		...options.ulimits.flatMap(ulimit => ['--ulimit', ulimit]),
		...options.localContexts.flatMap(([name]) => ['--build-context', `${name}=${required(layout.localContexts.get(name), `folder for context ${name}`)}`]),
		layout.context,
	];
};

const exportSteps = (request: BuildRequest, layout: SandboxLayout): EngineStep[] => {
	const buildah = buildahArgs(layout);
	const destination = `oci:${layout.outputLayout}:latest`;
	const step = (argv: string[], message: string, mayFail = false): EngineStep => ({
		kind: 'run', phase: 'export', argv, errorCode: 'E_EXPORT_FAILED', message, watch: false, ...(mayFail ? {mayFail} : {}),
	});
	const images = request.platforms.map(platform => imageName(platform.id));
	if (images.length === 1) {
		return [step([...buildah, 'push', '--format', 'oci', images[0]!, destination], 'writing the OCI layout failed (buildah push)')];
	}

	return [
		// The storage may be a kept cache holding the list of an earlier build: start a new one.
		step([...buildah, 'manifest', 'rm', outputList], 'removing an earlier image index failed', true),
		step([...buildah, 'manifest', 'create', outputList], 'creating the image index failed'),
		...images.map(image => step([...buildah, 'manifest', 'add', outputList, `containers-storage:localhost/${image}:latest`], `adding ${image} to the image index failed`)),
		step([...buildah, 'manifest', 'push', '--all', '--format', 'oci', outputList, destination], 'writing the OCI layout failed (buildah manifest push)'),
	];
};

export const planBuildah = (request: BuildRequest, layout: SandboxLayout): EnginePlan => {
	const buildah = buildahArgs(layout);
	const steps: EngineStep[] = [{kind: 'version', argv: ['buildah', '--version']}];
	for (const platform of request.platforms) {
		for (const base of layout.bases) {
			// The view's index.json tags its one image NAME: pulling oci:DIR:NAME stores it as NAME
			// read as a reference, which is what FROM NAME resolves to.
			const view = required(base.views.get(platform.id), `${platform.id} view of base ${base.name}`);
			steps.push({
				kind: 'run', phase: 'base-images', platform: platform.id,
				argv: [...buildah, 'pull', '-q', '--platform', platform.id, `oci:${view}:${base.name}`],
				errorCode: 'E_BASE_IMAGE', message: `loading ${base.name} for ${platform.id} from its OCI layout failed`, watch: false,
			});
		}

		steps.push({
			kind: 'run', phase: 'build', platform: platform.id, argv: buildahBuildArgs(request, layout, platform.id),
			errorCode: 'E_BUILD_FAILED', message: `the build for ${platform.id} failed (buildah)`, watch: true,
		});
	}

	steps.push(...exportSteps(request, layout));
	return {
		engine: 'buildah',
		steps,
		// buildah copies every secret into its container's folder under the storage root, which is
		// kept on the host's disk (the cache): with secrets, that folder is a tmpfs of the sandbox.
		tmpfs: request.engineOptions.secrets.length > 0 ? [`${buildahRoot(layout)}/${storageDriver}-containers`] : [],
		// chroot isolation gives RUN steps the sandbox's own /dev/shm: --shm-size resizes that.
		...(request.engineOptions.shmSize === undefined ? {} : {shmSize: request.engineOptions.shmSize}),
	};
};
