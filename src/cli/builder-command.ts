/**
 * `exobuild builder …`: the builder image's lifecycle. A builder is a verified OCI archive in
 * exobuild's cache (src/builder-image/store.ts); `save` and `load` (or `fetch`) carry it to an
 * air-gapped machine as one file, `build` makes it (the driver's default recipe: Debian packages on
 * Linux, Containerfile.builder with `container build` on macOS; Containerfile.builder on Linux with
 * BuildKit in the sandbox, its pinned bases replaceable by `--base-image`), `pull` takes it from a
 * registry where the driver can.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {Option, type Command} from 'commander';
import {
	buildContainerfileBuilder, builderArchitecture, builderEngines, builderKinds, toolSpecs, type ToolName, type ToolRequest, createBuilderImage, exportBuilderImage, findBuilderImage, importBuilderArchive,
	listWithCurrency, removeBuilderImage, resolveStoredBuilder, type BuilderImage, type StoredBuilder,
} from '../builder-image/index.js';
import {baseImageOverrides} from '../builder-image/containerfile.js';
import {fetchVerified} from '../builder-image/fetch.js';
import {baseOverridesLabel, containerfilePath} from '../builder-image/identity.js';
import {interruptedBy, UserError} from '../errors.js';
import {runExitCleanups} from '../runs/exit-cleanups.js';
import {builderImagesDir} from '../paths.js';
import {ensureCacheFolder, setAside} from '../runs/cache-guard.js';
import {withLock} from '../runs/lock.js';
import {createOwnedDir} from '../runs/owned-dir.js';
import {createDriver, defaultDriver, driverNames} from '../sandboxes/index.js';
import type {DriverName} from '../sandboxes/driver.js';
import {collect} from './main.js';
import {watchStopSignals} from './stop-signals.js';

const progress = (step: string, detail?: string): void => {
	process.stderr.write(`${step}${detail ? `: ${detail}` : ''}\n`);
};

const printJson = (value: unknown): void => {
	process.stdout.write(`${JSON.stringify(value, undefined, 2)}\n`);
};

const driverOption = (): Option => new Option('--driver <DRIVER>', 'sandbox driver whose image builder or registry client to use').choices(driverNames).default(defaultDriver());

const checkedDriver = async (name: DriverName) => {
	const driver = createDriver(name);
	await driver.features();
	return driver;
};

/** A stored builder by selector, else the current one. */
const chosen = async (selector: string | undefined): Promise<BuilderImage> => {
	if (selector !== undefined) {
		return resolveStoredBuilder(selector);
	}

	const image = await findBuilderImage();
	if (image === undefined) {
		throw new UserError('there is no current builder image in the cache', {
			hint: 'make one with `exobuild builder build`, or load one with `exobuild builder load -i FILE`',
			exitCode: 1,
			code: 'E_BUILDER_IMAGE',
		});
	}

	return image;
};

/** Loading something that is not for this checkout is allowed, and said. */
const reportLoaded = (image: StoredBuilder): void => {
	printJson(described(image));
	if (!image.current) {
		process.stderr.write(`exobuild: warning: ${image.reference} was made from another version of the ${image.kind} recipe; builds here will not use it\n`);
	}
};

interface BuildOptions {
	recipe?: string;
	driver: DriverName;
	mirror?: string;
	suite: string[];
	force?: boolean;
	buildkit?: string;
	buildkitSha256?: string;
	binfmt?: string;
	binfmtSha256?: string;
	baseImage: string[];
}

/** The upstream tools the options (or their environment variables) name; a checksum without its source is refused. */
const toolRequests = (options: BuildOptions): Partial<Record<ToolName, ToolRequest>> => {
	const requests: Partial<Record<ToolName, ToolRequest>> = {};
	for (const [name, source, sha256] of [['buildkit', options.buildkit, options.buildkitSha256], ['binfmt', options.binfmt, options.binfmtSha256]] as const) {
		if (source !== undefined && source !== '') {
			requests[name] = {source, sha256};
		} else if (sha256 !== undefined && sha256 !== '') {
			throw new UserError(`--${name}-sha256 without --${name}`, {hint: `give the tarball with --${name} FILE|URL (or ${toolSpecs[name].env})`, code: 'E_USAGE', exitCode: 2});
		}
	}

	return requests;
};

/** A builder as `inspect`, `ls --json` and `build` print it: its record plus the engines it has. */
const described = <T extends BuilderImage>(image: T): T & {engines: readonly string[]} => ({...image, engines: builderEngines(image)});

export const registerBuilderCommand = (program: Command): void => {
	const builder = program.command('builder').description('Manage builder images (the sandbox\'s root filesystem: emulators, engine, agent)');

	const build = async (options: BuildOptions, command: Command): Promise<void> => {
		const driver = createDriver(options.driver);
		const recipe = options.recipe ?? driver.defaultRecipe;
		if (!(builderKinds as readonly string[]).includes(recipe)) {
			throw new UserError(`unknown --recipe "${recipe}"`, {hint: `choose one of: ${builderKinds.join(', ')}`, code: 'E_USAGE'});
		}

		if (recipe === 'distro' && options.baseImage.length > 0) {
			throw new UserError('--base-image applies to the containerfile recipe (the distro recipe has no base images)', {
				hint: 'add --recipe containerfile, or drop --base-image', code: 'E_USAGE', exitCode: 2,
			});
		}

		const tools = toolRequests(options);
		if (recipe === 'distro') {
			printJson(described(await createBuilderImage({
				...(options.mirror === undefined ? {} : {mirror: options.mirror}),
				...(options.suite.length === 0 ? {} : {suites: options.suite}),
				force: options.force === true,
				onProgress: progress,
				tools,
			})));
			return;
		}

		const flagged = (['buildkit', 'buildkitSha256', 'binfmt', 'binfmtSha256'] as const).filter(key => options[key] !== undefined);
		const given = flagged.find(key => command.getOptionValueSource(key) === 'cli');
		if (given !== undefined) {
			throw new UserError(`--${given.replace(/[A-Z]/, letter => `-${letter.toLowerCase()}`).replace('Sha', 'sha')} applies to the distro recipe (Containerfile.builder pins its own BuildKit and binfmt images)`, {
				hint: 'drop it, or add --recipe distro', code: 'E_USAGE', exitCode: 2,
			});
		}

		if (flagged.length > 0) {
			const names = Object.keys(tools).map(name => toolSpecs[name as ToolName].env).join(' and ');
			process.stderr.write(driver.defaultRecipe === 'distro'
				? `exobuild: ${names} choose the distro builder Containerfile.builder is built in; the builder made has the BuildKit and binfmt of its own buildkit and binfmt images\n`
				: `exobuild: ${names} apply to the distro recipe; Containerfile.builder pins its own BuildKit and binfmt\n`);
		}

		if (options.suite.length > 0) {
			throw new UserError('--suite applies to the distro recipe', {hint: 'drop --suite, or add --recipe distro', code: 'E_USAGE'});
		}

		if (options.baseImage.length > 0 && driver.buildImageOverrides !== true) {
			throw new UserError(`--base-image: the ${driver.name} driver's image builder cannot serve base images from OCI layouts`, {
				hint: 'drop --base-image: this driver pulls the pinned images from their registry', code: 'E_USAGE', exitCode: 2,
			});
		}

		if (!options.force) {
			// A stored one is reused only if it was made from the same bases (the pins, or these stand-ins).
			const {digests} = await baseImageOverrides(options.baseImage, `linux/${builderArchitecture()}`, await fs.readFile(containerfilePath, 'utf8'));
			const existing = await findBuilderImage({kind: 'containerfile'});
			if (existing !== undefined && baseOverridesLabel(existing.baseOverrides ?? {}) === baseOverridesLabel(digests)) {
				printJson(described(existing));
				return;
			}
		}

		await driver.features();
		// A signal stops the build in the sandbox, which removes what it started (as `exobuild build` does).
		const stop = watchStopSignals('builder build');
		try {
			printJson(described(await buildContainerfileBuilder(driver, {
				...(options.mirror === undefined ? {} : {mirror: options.mirror}), baseImages: options.baseImage, onProgress: progress, signal: stop.signal,
			})));
		} catch (error) {
			const caught = stop.caught();
			if (caught !== undefined) {
				await runExitCleanups();
				throw interruptedBy(caught, 'builder build', error);
			}

			throw error;
		} finally {
			stop.end();
		}
	};

	const addBuildOptions = (command: Command): Command => command
		.addOption(new Option('--recipe <RECIPE>', 'containerfile (Containerfile.builder; the default on macOS; on Linux built with BuildKit from a builder made with --buildkit) | distro (Debian packages with mmdebstrap; the default on Linux)'))
		.addOption(driverOption())
		.addOption(new Option('--mirror <URL>', 'Debian mirror for packages and probe binaries (any apt mirror: the air-gapped path)').env('EXOBUILD_DEBIAN_MIRROR'))
		.addOption(new Option('--suite <NAME>', 'Debian suite(s) to try in order, repeatable (distro recipe; default: trixie, then stable)').argParser(collect).default([]))
		.addOption(new Option('--force', 'make it again even if a current one is stored'))
		.addOption(new Option('--buildkit <SOURCE>', 'add buildkitd and buildctl from a moby/buildkit release tarball: a file, an https URL, or none (default: the pinned official release, downloaded)').env('EXOBUILD_BUILDKIT'))
		.addOption(new Option('--buildkit-sha256 <HEX>', 'the BuildKit tarball\'s SHA-256 (needed for a URL other than the pinned release; checked for a file)').env('EXOBUILD_BUILDKIT_SHA256'))
		.addOption(new Option('--binfmt <SOURCE>', 'add tonistiigi/binfmt from a tarball holding bin/binfmt: a file, an https URL, or none (the default)').env('EXOBUILD_BINFMT'))
		.addOption(new Option('--base-image <NAME=oci-layout://DIR>', 'containerfile recipe (linux-userns): serve the base Containerfile.builder pins as ARG NAME_IMAGE (ubuntu, binfmt, buildkit) from an OCI layout, for this build only; the builder records it (baseOverrides), repeatable').argParser(collect).default([]))
		.addOption(new Option('--binfmt-sha256 <HEX>', 'the binfmt tarball\'s SHA-256 (needed for a URL; checked for a file)').env('EXOBUILD_BINFMT_SHA256'));

	addBuildOptions(builder.command('build').description('Make the builder image and store it in the cache'))
		.action(async (options: BuildOptions, command: Command) => build(options, command));
	addBuildOptions(builder.command('create').description('Same as `builder build` (kept for scripts)'))
		.action(async (options: BuildOptions, command: Command) => build(options, command));

	builder
		.command('pull')
		.description('Take a builder image from a registry (drivers with a registry client: apple-container)')
		.argument('<REF>', 'image reference, e.g. ghcr.io/you/exobuild-builder:containerfile-0123456789ab')
		.addOption(driverOption())
		.action(async (reference: string, options: {driver: DriverName}) => {
			const driver = await checkedDriver(options.driver);
			if (driver.pullImage === undefined) {
				throw new UserError(`the ${driver.name} driver has no registry client to pull ${reference} with`, {
					hint: 'download the archive instead: `exobuild builder fetch URL --sha256 HEX`, or `builder load -i FILE`',
					code: 'E_USAGE',
				});
			}

			const work = await createOwnedDir(path.join(builderImagesDir(), `.work-${process.pid}-${Date.now()}`), 'builder-work');
			try {
				const dest = path.join(work.path, 'pulled.tar');
				progress('Pull', reference);
				await driver.pullImage(reference, `linux/${builderArchitecture()}`, dest);
				reportLoaded(await importBuilderArchive(dest));
			} finally {
				await work.remove();
			}
		});

	builder
		.command('save')
		.description('Write a builder image to an OCI archive file (default: the current one)')
		.argument('[BUILDER]', 'exobuild-builder:KIND-HASH, a hash prefix, or a kind (see `builder ls`)')
		.requiredOption('-o, --output <FILE>', 'archive to write (replaced only by a complete copy)')
		.action(async (selector: string | undefined, options: {output: string}) => {
			const image = await chosen(selector);
			const dest = path.resolve(options.output);
			const stat = await fs.stat(dest).catch(() => undefined);
			if (stat?.isDirectory()) {
				throw new UserError(`${dest} is a folder`, {hint: 'name the archive file to write, e.g. -o builder.tar', code: 'E_USAGE'});
			}

			await exportBuilderImage(image, dest);
			progress('Saved', `${image.reference} to ${dest}`);
		});

	builder
		.command('load')
		.description('Verify a builder archive (from `builder save`) and store it: works offline')
		.requiredOption('-i, --input <FILE>', 'the archive')
		.action(async (options: {input: string}) => {
			reportLoaded(await importBuilderArchive(path.resolve(options.input)));
		});

	builder
		.command('fetch')
		.description('Download a builder archive (retries, resumes, checks the SHA-256 before use) and load it')
		.argument('<URL>', 'http(s) URL of an archive made by `builder save`')
		.requiredOption('--sha256 <HEX>', 'expected SHA-256 of the archive (64 hex digits)')
		.action(async (url: string, options: {sha256: string}) => {
			if (!/^[a-f\d]{64}$/i.test(options.sha256)) {
				throw new UserError(`--sha256 ${options.sha256} is not a SHA-256 digest`, {
					hint: 'give the 64 hex digits of the archive\'s SHA-256 (no "sha256:" prefix)', code: 'E_USAGE', exitCode: 2,
				});
			}

			// Kept across runs (not an owned dir), so an interrupted download resumes.
			const dest = path.join(builderImagesDir(), 'downloads', `${options.sha256.toLowerCase()}.tar`);
			await ensureCacheFolder(path.dirname(dest));
			const partial = await fs.lstat(dest).catch(() => undefined);
			if (partial !== undefined && !partial.isFile()) {
				await setAside(dest, 'unsafe', partial.isSymbolicLink() ? 'is a symlink' : 'is not a regular file');
			}

			let last = 0;
			// One download per archive at a time: a second `fetch` of the same one waits, then finds it.
			const fetched = await withLock(`${dest}.lock`, () => progress('Waiting for another exobuild downloading the same archive'), async () => fetchVerified({
				url, sha256: options.sha256, dest,
				onProgress({transferred, total, percent}) {
					if (process.stderr.isTTY) {
						const bar = percent === undefined ? '' : `[${'#'.repeat(Math.round(percent * 0.3)).padEnd(30)}] ${percent.toFixed(0)}% `;
						process.stderr.write(`\r${bar}${(transferred / 1024 / 1024).toFixed(1)}${total === undefined ? '' : `/${(total / 1024 / 1024).toFixed(1)}`} MiB`);
					} else if (transferred - last >= 64 * 1024 * 1024 || transferred === total) {
						last = transferred;
						progress('Download', `${(transferred / 1024 / 1024).toFixed(0)} MiB${total === undefined ? '' : ` of ${(total / 1024 / 1024).toFixed(0)}`}`);
					}
				},
			}));
			if (process.stderr.isTTY) {
				process.stderr.write(os.EOL);
			}

			progress('Downloaded', `${fetched.bytes} bytes${fetched.resumed ? ' (resumed)' : ''}, SHA-256 verified`);
			try {
				reportLoaded(await importBuilderArchive(fetched.path));
			} finally {
				await fs.rm(fetched.path, {force: true});
			}
		});

	builder
		.command('inspect')
		.description('Print a builder image as JSON (default: the current one; exit 1 if there is none)')
		.argument('[BUILDER]', 'exobuild-builder:KIND-HASH, a hash prefix, or a kind')
		.action(async (selector: string | undefined) => {
			printJson(described(await chosen(selector)));
		});

	builder
		.command('ls')
		.description('List stored builder images')
		.option('--json', 'print JSON')
		.action(async (options: {json?: boolean}) => {
			const images = await listWithCurrency();
			if (options.json) {
				printJson(images.map(image => described(image)));
				return;
			}

			const sizes = await Promise.all(images.map(async image => (await fs.lstat(image.archivePath).catch(() => ({size: 0}))).size));
			process.stdout.write(`${['REFERENCE', 'KIND', 'ARCH', 'SIZE', 'CURRENT', 'ENGINES', 'TOOLS', 'BASES'].join('\t')}\n`);
			for (const [index, image] of images.entries()) {
				const tools = [image.buildkit === undefined ? '' : `buildkit ${image.buildkit.version}`, image.binfmt === undefined ? '' : `binfmt ${image.binfmt.version}`].filter(Boolean).join(', ') || '-';
				const bases = image.kind === 'distro' ? '-' : (image.baseOverrides === undefined ? 'pinned' : `stand-ins: ${Object.keys(image.baseOverrides).sort().join(',')}`);
				process.stdout.write(`${[image.reference, image.kind, image.architecture, `${(sizes[index]! / 1024 / 1024).toFixed(0)}MiB`, image.current ? 'yes' : 'stale', builderEngines(image).join(','), tools, bases].join('\t')}\n`);
			}
		});

	builder
		.command('rm')
		.description('Remove stored builder images')
		.argument('[BUILDER...]', 'exobuild-builder:KIND-HASH, hash prefixes, or kinds')
		.option('--stale', 'remove every image not made from this checkout\'s recipes')
		.action(async (selectors: string[], options: {stale?: boolean}) => {
			if (selectors.length === 0 && !options.stale) {
				throw new UserError('nothing to remove', {hint: 'name builder images (see `exobuild builder ls`) or pass --stale', code: 'E_USAGE'});
			}

			const targets = [
				...(await Promise.all(selectors.map(async selector => resolveStoredBuilder(selector)))),
				...(options.stale ? (await listWithCurrency()).filter(image => !image.current) : []),
			];
			for (const image of targets) {
				await removeBuilderImage(image);
				process.stdout.write(`${image.reference}\n`);
			}
		});
};
