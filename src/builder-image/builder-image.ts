import type {BuilderKind} from './identity.js';
import type {ToolRef} from './upstream-tools.js';

/** A builder image as the drivers consume it: a verified OCI image archive in exobuild's cache. */
export interface BuilderImage {
	/** Path of the OCI image archive (a tar holding an OCI image layout with one manifest). */
	readonly archivePath: string;
	/** sha256:… of the image manifest in the archive. */
	readonly manifestDigest: string;
	/** Hash of the recipe inputs that produced it (names the archive); for a distro builder, the upstream tarballs' SHA-256 are among them. */
	readonly inputHash: string;
	/** Architecture of the image (the host's; the builder always runs natively). */
	readonly architecture: string;
	/** Which recipe made it. */
	readonly kind: BuilderKind;
	/** exobuild-builder:KIND-HASH12, its name in a driver's image store. */
	readonly reference: string;
	/** Distro builders: the hash of the recipe alone (a builder of another recipe is stale, whatever tools it carries). */
	readonly recipeHash?: string;
	/** Distro builders: the BuildKit release tarball whose buildkitd and buildctl it carries. */
	readonly buildkit?: ToolRef;
	/** Distro builders: the tonistiigi/binfmt tarball whose installer it carries. */
	readonly binfmt?: ToolRef;
	/**
	 * Containerfile builders made with `--base-image`: each pinned base that a stand-in replaced
	 * (ubuntu, binfmt, buildkit) and the digest of the OCI layout that served it. Absent: made from the pins.
	 */
	readonly baseOverrides?: Readonly<Record<string, string>>;
}

export type BuilderEngine = 'buildkit' | 'buildah';

/**
 * The engines a builder image has: a containerfile builder has BuildKit (Containerfile.builder),
 * a distro builder has buildah, and BuildKit too when it was made with a BuildKit tarball.
 */
export const builderEngines = (image: Pick<BuilderImage, 'kind' | 'buildkit'>): readonly BuilderEngine[] => {
	if (image.kind === 'containerfile') {
		return ['buildkit'];
	}

	return image.buildkit === undefined ? ['buildah'] : ['buildkit', 'buildah'];
};
