/**
 * What BuildKit carries out. Everything but --sbom: BuildKit's SBOM attestation runs a scanner
 * image, `docker/buildkit-syft-scanner:stable-1` unless generator= names another
 * (frontend/attestations/parse.go, defaultSBOMGenerator, moby/buildkit v0.32.2), which the
 * dockerfile frontend resolves from a registry; a named context cannot stand in for it, and the
 * sandbox has no registry of its own. Provenance needs no image: the solver writes it itself
 * (solver/llbsolver/provenance.go), so --provenance is carried out.
 */
import {supported, type Capabilities} from '../capabilities.js';

export const buildkitCapabilities: Capabilities = {
	progressRawjson: supported,
	noCacheFilter: supported,
	sbom: {
		supported: false,
		why: 'BuildKit makes SBOMs by running the docker/buildkit-syft-scanner image, which it must pull from a registry: exobuild builds offline',
		hint: 'drop --sbom and scan the exported image instead (e.g. `syft oci-dir:DIR`); --provenance works offline',
	},
	provenance: supported,
	cacheFromOther: supported,
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
	typedAnnotations: supported,
	buildArgs: supported,
	localContexts: supported,
	layoutContexts: supported,
	cacheTo: supported,
};
