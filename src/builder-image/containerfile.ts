/**
 * Making the containerfile builder image: Containerfile.builder built by the driver's own
 * image builder (`container build` on macOS, BuildKit in a linux-userns sandbox on Linux) into
 * an OCI archive, then verified and stored
 * like any loaded builder. Its build args come from the platform table and the input hash.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {exobuildVersion} from '../agent/agent-version.js';
import {UserError} from '../errors.js';
import {builderImagesDir, packageRoot} from '../paths.js';
import {createOwnedDir} from '../runs/owned-dir.js';
import {resolvePlatformManifests} from '../oci/index.js';
import type {BaseImageOverride, SandboxDriver} from '../sandboxes/driver.js';
import type {BuilderImage} from './builder-image.js';
import {baseOverridesLabel, builderLabels, containerfileBases, containerfileHash, containerfilePath} from './identity.js';
import {archPairs} from './recipe.js';
import {builderArchitecture, importBuilderArchive} from './store.js';

export interface ContainerfileBuildOptions {
	readonly mirror?: string;
	/** `--base-image NAME=oci-layout://DIR` values: stand-ins for the pinned bases, for this build only. */
	readonly baseImages?: readonly string[];
	readonly onProgress?: (step: string, detail?: string) => void;
	readonly signal?: AbortSignal;
}

/** The build args Containerfile.builder declares without defaults. */
export const containerfileBuildArgs = (inputHash: string, mirror?: string): Record<string, string> => ({
	ARCH_PAIRS: archPairs().join(' '),
	EXOBUILD_INPUT_HASH: inputHash,
	EXOBUILD_VERSION: exobuildVersion,
	...(mirror === undefined ? {} : {DEBIAN_MIRROR: mirror}),
});

const usage = (message: string, hint: string): UserError => new UserError(message, {hint, code: 'E_USAGE', exitCode: 2});

/** The named context (and build-arg value) a stand-in of base NAME has in the build. */
const contextNameOf = (name: string): string => `exobuild-base-${name}`;

/**
 * `--base-image NAME=oci-layout://DIR` values checked against the bases Containerfile.builder
 * pins (its `ARG <NAME>_IMAGE=` lines): each becomes `--build-arg <NAME>_IMAGE=exobuild-base-NAME`
 * plus a named context of that name. BuildKit's dockerfile frontend would also match a named
 * context keyed by the full pinned reference (moby/buildkit v0.32.2
 * frontend/dockerui/namedcontext.go: the FROM name, ParseNormalizedNamed then FamiliarString
 * with ":latest" trimmed, e.g. `ubuntu:24.04@sha256:…`), but a short local name keeps the
 * context name free of ':' and '@' for every engine, and the pinned ARG default is left as is.
 */
export const baseImageOverrides = async (values: readonly string[], platform: string, containerfileText: string, cwd = process.cwd()): Promise<{overrides: BaseImageOverride[]; digests: Record<string, string>}> => {
	const bases = containerfileBases(containerfileText);
	const names = bases.map(base => base.name).join(', ');
	const overrides: BaseImageOverride[] = [];
	const digests: Record<string, string> = {};
	for (const value of values) {
		const eq = value.indexOf('=');
		const name = eq <= 0 ? '' : value.slice(0, eq);
		const source = value.slice(eq + 1);
		if (name === '' || !source.startsWith('oci-layout://') || source === 'oci-layout://') {
			throw usage(`invalid --base-image "${value}": expected NAME=oci-layout://DIR`, `e.g. --base-image ubuntu=oci-layout://./debian-layout (NAME is one of: ${names})`);
		}

		const base = bases.find(candidate => candidate.name === name);
		if (base === undefined) {
			throw usage(`--base-image ${name}: Containerfile.builder pins no base of that name`, `name one of: ${names}`);
		}

		if (digests[name] !== undefined) {
			throw usage(`--base-image ${name} given twice`, 'give each base once');
		}

		const layoutDir = path.resolve(cwd, source.slice('oci-layout://'.length));
		const resolved = await resolvePlatformManifests(layoutDir, [platform], {name}).catch((error: unknown) => {
			const why = error instanceof Error ? error.message.split('\n')[0]! : String(error);
			throw usage(`--base-image ${name}=${source}: ${why}`, `give an OCI image layout folder that serves ${platform}`);
		});
		digests[name] = resolved.topDigest;
		overrides.push({arg: base.arg, contextName: contextNameOf(name), layoutDir});
	}

	return {overrides, digests};
};

export const buildContainerfileBuilder = async (driver: SandboxDriver, options: ContainerfileBuildOptions = {}): Promise<BuilderImage> => {
	if (driver.buildImage === undefined) {
		throw new UserError(`the ${driver.name} driver cannot build Containerfile.builder (it has no image builder, and its base images come from a registry)`, {
			hint: 'use the Debian recipe (`exobuild builder build --recipe distro`), or load a containerfile builder made on a Mac: `exobuild builder load -i FILE`',
			code: 'E_BUILDER_IMAGE',
		});
	}

	const platform = `linux/${builderArchitecture()}`;
	const {overrides, digests} = await baseImageOverrides(options.baseImages ?? [], platform, await fs.readFile(containerfilePath, 'utf8'));
	if (overrides.length > 0 && driver.buildImageOverrides !== true) {
		throw usage(`--base-image: the ${driver.name} driver's image builder cannot serve base images from OCI layouts`, 'drop --base-image: this driver pulls the pinned images from their registry');
	}

	const inputHash = await containerfileHash();
	const work = await createOwnedDir(path.join(builderImagesDir(), `.work-${process.pid}-${Date.now()}`), 'builder-work');
	try {
		const dest = path.join(work.path, 'builder.tar');
		options.onProgress?.('Build Containerfile.builder', `${driver.name}, ${platform}${overrides.length === 0 ? '' : `, stand-ins for ${Object.keys(digests).join(', ')}`}`);
		await driver.buildImage({
			containerfile: containerfilePath,
			contextDir: packageRoot,
			buildArgs: {...containerfileBuildArgs(inputHash, options.mirror), ...Object.fromEntries(overrides.map(override => [override.arg, override.contextName]))},
			platform,
			...(overrides.length === 0 ? {} : {baseImages: overrides, labels: {[builderLabels.baseOverrides]: baseOverridesLabel(digests)}}),
			dest,
			onLine: line => options.onProgress?.('Build Containerfile.builder', line),
			...(options.signal === undefined ? {} : {signal: options.signal}),
		});
		options.onProgress?.('Verify and store the builder image');
		const image = await importBuilderArchive(dest);
		if (!image.current) {
			throw new UserError(`the built image is labelled ${image.inputHash.slice(0, 12)}, not this checkout's ${inputHash.slice(0, 12)}`, {
				hint: 'Containerfile.builder must pass EXOBUILD_INPUT_HASH into its dev.exobuild.input-hash label',
				exitCode: 1,
				code: 'E_BUILDER_IMAGE',
			});
		}

		const recorded = baseOverridesLabel(image.baseOverrides ?? {});
		if (recorded !== baseOverridesLabel(digests)) {
			throw new UserError(`the built image records stand-ins "${recorded || 'none'}", not the --base-image given ("${baseOverridesLabel(digests) || 'none'}")`, {
				hint: `the driver's image builder must add the ${builderLabels.baseOverrides} label it is given`,
				exitCode: 1,
				code: 'E_BUILDER_IMAGE',
			});
		}

		const {current: _current, ...stored} = image;
		return stored;
	} finally {
		await work.remove();
	}
};
