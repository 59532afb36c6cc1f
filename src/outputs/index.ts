/**
 * The buildx output types, written on the host from the OCI image layout the sandbox's agent
 * produced: oci (archive or folder), docker (docker load archive), local (root filesystem
 * folder), tar (root filesystem tar). `writeOutput` dispatches on an OutputTarget.
 */
import type {Writable} from 'node:stream';
import {UserError} from '../errors.js';
import {writeDockerArchive} from './docker.js';
import {outputErrorCode} from './images.js';
import {writeLocalOutput} from './local.js';
import {writeOciArchive, writeOciLayoutDir} from './oci.js';
import {outputTargetSchema, type OutputTarget} from './target.js';
import {writeTarOutput} from './tar.js';

export interface WriteOutputOptions {
	/** Image references (example/app:1): names in oci index.json and docker RepoTags; ignored by local and tar. */
	readonly tags?: readonly string[];
	/** Platform ids to export from a multi-platform layout (default: all); oci exports the whole layout regardless. */
	readonly platforms?: readonly string[];
	/** Where dest `-` streams to; process.stdout unless given. */
	readonly stdout?: Writable;
	/** Stops type=local between entries (its staging folder removed, dest left as it was). */
	readonly signal?: AbortSignal;
}

/** Writes the layout at `layoutDir` as `target` says. The target is validated (a UserError when invalid). */
export const writeOutput = async (layoutDir: string, target: OutputTarget, options: WriteOutputOptions = {}): Promise<void> => {
	const parsed = outputTargetSchema.safeParse(target);
	if (!parsed.success) {
		throw new UserError(`invalid output: ${parsed.error.issues.map(issue => issue.message).join('; ')}`, {code: outputErrorCode});
	}

	const valid = parsed.data;
	switch (valid.type) {
		case 'oci': {
			await (valid.tar === false ? writeOciLayoutDir : writeOciArchive)(layoutDir, valid.dest, options);
			return;
		}

		case 'docker': {
			await writeDockerArchive(layoutDir, valid.dest, options);
			return;
		}

		case 'local': {
			await writeLocalOutput(layoutDir, valid.dest, {...options, keepOwners: valid.keepOwners === true});
			return;
		}

		case 'tar': {
			await writeTarOutput(layoutDir, valid.dest, options);
		}
	}
};

export {outputTargetSchema, type OutputTarget, type OutputType} from './target.js';
export {repoTagOf, writeDockerArchive, type DockerArchiveOptions, type DockerManifestEntry} from './docker.js';
export {writeLocalOutput, type LocalOutputOptions} from './local.js';
export {writeOciArchive, writeOciLayoutDir, type OciOutputOptions} from './oci.js';
export {writeTarOutput, type TarOutputOptions} from './tar.js';
export {outputErrorCode, platformFolder, selectImages, type SelectedImage} from './images.js';
export {replaceDirAtomically} from './atomic.js';
export {
	destinationErrorCode, noSpaceErrorCode, resolveFileDestination, resolveLayoutFolderDestination, writeErrorCode, writeFileContent, writeFileDestination, writesToStdout,
	type FileDestination,
} from './destination.js';
