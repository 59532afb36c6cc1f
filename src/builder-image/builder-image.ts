import type {BuilderKind} from './identity.js';

/** A builder image as the runtimes consume it: a verified OCI image archive in exobuild's cache. */
export interface BuilderImage {
	/** Path of the OCI image archive (a tar holding an OCI image layout with one manifest). */
	readonly archivePath: string;
	/** sha256:… of the image manifest in the archive. */
	readonly manifestDigest: string;
	/** Hash of the recipe inputs that produced it (names the archive). */
	readonly inputHash: string;
	/** Architecture of the image (the host's; the builder always runs natively). */
	readonly architecture: string;
	/** Which recipe made it. */
	readonly kind: BuilderKind;
	/** exobuild-builder:KIND-HASH12, its name in a runtime's image store. */
	readonly reference: string;
}
