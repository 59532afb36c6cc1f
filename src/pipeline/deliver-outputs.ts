/**
 * Deliver the outputs, after the sandbox is gone, from the OCI layout it exported into the
 * host's scratch folder: the --output (oci/docker archive, local folder, tar), --load into the
 * driver's image store, --push to each tag's registry, and (once the CLI knows the run was not
 * stopped) --metadata-file and --iidfile. An output file is replaced whole or not at all
 * (src/outputs), so a failed build never touches an existing one.
 */
import path from 'node:path';
import {normaliseReference, packLayoutToArchive, readIndexJson, readManifest, type Descriptor} from '../oci/index.js';
import {isIndexMediaType} from '../oci/schema.js';
import {resolveFileDestination, writeOutput} from '../outputs/index.js';
import {writeFileContent} from '../outputs/destination.js';
import {pushLayout} from '../outputs/registry-push.js';
import type {BuildReporter} from '../progress/events.js';
import type {BuildRequest} from '../request/build-request.js';
import type {SandboxDriver} from '../sandboxes/driver.js';
import {UserError, userErrorOf} from '../errors.js';
import {abortable} from './abort.js';
import type {BuildResult} from './build-result.js';
import type {HostPhases} from './host-phases.js';

/** The image the engine exported: the layout folder, its top descriptor, and the config digest (one platform). */
export interface ExportedImage {
	readonly layout: string;
	readonly top: Descriptor;
	readonly configDigest: string | undefined;
}

/** Reads the layout the engine wrote at `${outDir}/oci-layout` (untrusted: through the safe readers). */
export const readExportedImage = async (outDir: string, signal?: AbortSignal): Promise<ExportedImage> => {
	const layout = `${outDir}/oci-layout`;
	const [top] = (await abortable(readIndexJson(layout), signal)).manifests;
	if (top === undefined) {
		throw new UserError('the engine wrote an empty OCI layout', {hint: 'run with --progress plain to see its output', exitCode: 1, code: 'E_EXPORT_FAILED'});
	}

	const configDigest = isIndexMediaType(top.mediaType) ? undefined : (await abortable(readManifest(layout, top), signal)).config.digest;
	return {layout, top, configDigest};
};

/** A full disk while writing `dest` says so, naming the folder (an fd write error names no path). */
export const withDest = (error: unknown, dest: string): unknown => {
	const code = (error as NodeJS.ErrnoException | undefined)?.code;
	if ((code === 'ENOSPC' || code === 'EDQUOT') && (error as NodeJS.ErrnoException).path === undefined) {
		return userErrorOf(Object.assign(error as Error, {path: path.dirname(dest)})) ?? error;
	}

	return error;
};

export interface DeliverInput {
	readonly request: BuildRequest;
	readonly image: ExportedImage;
	readonly driver: Pick<SandboxDriver, 'loadImage'>;
	/** The scratch folder the sandbox exported to (an archive for --load is made here when needed). */
	readonly outDir: string;
	readonly phases: Pick<HostPhases, 'run'>;
	readonly reporter: BuildReporter;
	readonly signal?: AbortSignal;
}

export const deliverOutputs = async (input: DeliverInput): Promise<void> => {
	const {request, image: {layout}, phases, reporter, signal} = input;
	const {output} = request;
	if (output !== undefined || request.load) {
		if (output !== undefined) {
			const platforms = request.platforms.map(platform => platform.id);
			await phases.run('archive', async () => writeOutput(layout, output, {tags: request.tags, platforms, ...(signal === undefined ? {} : {signal})}).catch((error: unknown) => {
				throw output.dest === '-' ? error : withDest(error, output.dest);
			}), () => `type=${output.type} ${output.dest === '-' ? 'to stdout' : output.dest}`);
		}

		const load = input.driver.loadImage;
		if (request.load && load !== undefined) {
			// The store takes an OCI archive: the output itself if it is one, else one made for it.
			const archive = output?.type === 'oci' && output.tar !== false && resolveFileDestination(output.dest).kind === 'replace' ? output.dest : `${input.outDir}/load.tar`;
			if (archive !== output?.dest) {
				await abortable(packLayoutToArchive(layout, archive, {tags: request.tags}), signal);
			}

			const report = await phases.run('load', async () => load(archive, request.tags), loaded => loaded.loaded.join(', '));
			for (const note of report.notes) {
				reporter.report({kind: 'warning', message: note});
			}
		}
	} else if (!request.push) {
		reporter.report({kind: 'warning', message: 'no --output given: the image was discarded with the sandbox. Add --output type=oci,dest=FILE (or docker, local, tar) to keep it.'});
	}

	if (request.push) {
		await phases.run('push', async () => {
			for (const tag of request.tags) {
				// One tag after the other: a registry that refuses one stops the push there.
				await pushLayout(layout, tag);
			}
		}, () => request.tags.join(', '));
	}
};

/** buildx's --metadata-file keys for a result. */
export const resultMetadata = (request: BuildRequest, result: BuildResult): Record<string, unknown> => ({
	'containerimage.digest': result.descriptor.digest,
	'containerimage.descriptor': result.descriptor,
	...(result.configDigest === undefined ? {} : {'containerimage.config.digest': result.configDigest}),
	...(request.tags.length === 0 ? {} : {'image.name': request.tags.map(tag => normaliseReference(tag)).join(',')}),
	'exobuild.platforms': result.platforms,
	'exobuild.engine': result.engine,
});

/**
 * --metadata-file (buildx's keys) and --iidfile, as every file output is written
 * (src/outputs/destination.ts): a file whole or not at all, a symlink followed, a device, FIFO or
 * /dev/stdout written through.
 */
export const writeResultFiles = async (request: BuildRequest, result: BuildResult): Promise<void> => {
	if (request.metadataFile !== undefined) {
		await writeFileContent(request.metadataFile, `${JSON.stringify(resultMetadata(request, result), undefined, 2)}\n`);
	}

	if (request.iidFile !== undefined) {
		await writeFileContent(request.iidFile, result.configDigest ?? result.descriptor.digest);
	}
};
