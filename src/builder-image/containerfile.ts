/**
 * Making the containerfile builder image: Containerfile.builder built by the driver's own
 * image builder (`container build` on macOS) into an OCI archive, then verified and stored
 * like any loaded builder. Its build args come from the platform table and the input hash.
 */
import path from 'node:path';
import {exobuildVersion} from '../agent/agent-version.js';
import {UserError} from '../errors.js';
import {builderImagesDir, packageRoot} from '../paths.js';
import {createOwnedDir} from '../runs/owned-dir.js';
import type {SandboxDriver} from '../sandboxes/driver.js';
import type {BuilderImage} from './builder-image.js';
import {containerfileHash, containerfilePath} from './identity.js';
import {archPairs} from './recipe.js';
import {builderArchitecture, importBuilderArchive} from './store.js';

export interface ContainerfileBuildOptions {
	readonly mirror?: string;
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

export const buildContainerfileBuilder = async (driver: SandboxDriver, options: ContainerfileBuildOptions = {}): Promise<BuilderImage> => {
	if (driver.buildImage === undefined) {
		throw new UserError(`the ${driver.name} driver cannot build Containerfile.builder (it has no image builder, and its base images come from a registry)`, {
			hint: 'use the Debian recipe (`exobuild builder build --recipe distro`), or load a containerfile builder made on a Mac: `exobuild builder load -i FILE`',
			code: 'E_BUILDER_IMAGE',
		});
	}

	const inputHash = await containerfileHash();
	const work = await createOwnedDir(path.join(builderImagesDir(), `.work-${process.pid}-${Date.now()}`), 'builder-work');
	try {
		const dest = path.join(work.path, 'builder.tar');
		options.onProgress?.('Build Containerfile.builder', `${driver.name}, linux/${builderArchitecture()}`);
		await driver.buildImage({
			containerfile: containerfilePath,
			contextDir: packageRoot,
			buildArgs: containerfileBuildArgs(inputHash, options.mirror),
			platform: `linux/${builderArchitecture()}`,
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

		const {current: _current, ...stored} = image;
		return stored;
	} finally {
		await work.remove();
	}
};
