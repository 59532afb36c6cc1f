/**
 * What buildah carries out, and what it cannot (refused before boot, as the agent's
 * set_buildah_root did after it).
 */
import {supported, type Capabilities} from '../capabilities.js';

/** The way out of every buildah refusal. */
export const useBuildKit = 'drop the option, or build with BuildKit: --engine buildkit with a builder image that has it (one made from Containerfile.builder)';

const unsupported = (why: string): {supported: false; why: string; hint: string} => ({supported: false, why, hint: useBuildKit});

export const buildahCapabilities: Capabilities = {
	progressRawjson: unsupported('buildah has no machine-readable progress (BuildKit\'s rawjson needs --engine buildkit)'),
	noCacheFilter: unsupported('buildah cannot skip the cache for some stages only (use --no-cache, or --engine buildkit)'),
	sbom: unsupported('buildah makes no SBOM attestations (use --engine buildkit)'),
	provenance: unsupported('buildah makes no provenance attestations (use --engine buildkit)'),
	cacheFromOther: unsupported('buildah keeps its cache as image storage, which it must write: --cache-from and --cache-to must name the same folder (or use --engine buildkit)'),
	target: supported,
	noCache: supported,
	pull: supported,
	networkNone: supported,
	networkHost: supported,
	addHosts: supported,
	secrets: supported,
	ssh: supported,
	shmSize: supported,
	ulimits: supported,
	sourceDateEpoch: supported,
	labels: supported,
	annotations: supported,
	typedAnnotations: unsupported('buildah puts annotations on each image manifest only: index, descriptor and per-platform annotations need --engine buildkit'),
	buildArgs: supported,
	localContexts: supported,
	layoutContexts: supported,
	cacheTo: supported,
};
