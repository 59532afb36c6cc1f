/**
 * The linux-userns driver's image builder (`exobuild builder build --recipe containerfile`):
 * the Containerfile is built by exobuild's own pipeline (`runBuild`), with BuildKit, in a
 * linux-userns sandbox booted from the current builder that has BuildKit (a distro builder made
 * with `--buildkit`), into an OCI archive at the request's dest. Base images the request
 * overrides are named contexts served from their OCI layouts; nothing is pulled from a registry
 * that a build arg or `--build-context` does not name.
 *
 * The pipeline, the build-flag parser and the reporter are imported when a build starts, not
 * when this module loads: the pipeline (and the flag parser, through the driver factory) import
 * src/sandboxes, so a static import here would be a cycle at module load.
 */
import {builderEngines} from '../../builder-image/builder-image.js';
import {findBuilderImage} from '../../builder-image/store.js';
import {UserError} from '../../errors.js';
import type {ImageBuildRequest, SandboxDriver} from '../driver.js';

/** The stored builder this build runs in: the current one, which must have BuildKit. */
const buildkitBuilder = async () => {
	const image = await findBuilderImage();
	if (image === undefined || !builderEngines(image).includes('buildkit')) {
		throw new UserError(image === undefined
			? 'building Containerfile.builder on Linux needs a builder with BuildKit, and there is no builder image in the cache'
			: `building Containerfile.builder on Linux needs a builder with BuildKit, and the current one (${image.reference}) has ${builderEngines(image).join(', ')} only`, {
			hint: 'make one first: `exobuild builder build --buildkit SOURCE` (a moby/buildkit release tarball; see docs/buildkit.md)',
			code: 'E_USAGE',
			exitCode: 2,
		});
	}

	return image;
};

export const buildImageInSandbox = async (driver: SandboxDriver, request: ImageBuildRequest): Promise<void> => {
	const image = await buildkitBuilder();
	const [{runBuild}, {toBuildRequest}, {PlainReporter}] = await Promise.all([
		import('../../pipeline/run-build.js'),
		import('../../cli/build-flags/options.js'),
		import('../../progress/plain-reporter.js'),
	]);
	const warnings: string[] = [];
	const buildRequest = toBuildRequest(request.contextDir, {
		platform: [request.platform],
		file: request.containerfile,
		tag: [],
		buildArg: Object.entries(request.buildArgs).map(([key, value]) => `${key}=${value}`),
		cache: true,
		buildContext: (request.baseImages ?? []).map(base => `${base.contextName}=oci-layout://${base.layoutDir}`),
		label: Object.entries(request.labels ?? {}).map(([key, value]) => `${key}=${value}`),
		output: [`type=oci,dest=${request.dest}`],
		progress: 'plain',
		engine: 'buildkit',
		driver: driver.name,
	}, {cwd: request.contextDir, env: {}, warn: message => warnings.push(message)});
	const line = (text: string): void => request.onLine?.(text);
	for (const warning of warnings) {
		line(`warning: ${warning}`);
	}

	await runBuild(buildRequest, {
		driver,
		builders: {
			async find() {
				return image;
			},
			async ensure() {
				return image;
			},
		},
		reporter: new PlainReporter(line),
		...(request.signal === undefined ? {} : {signal: request.signal}),
	});
};
