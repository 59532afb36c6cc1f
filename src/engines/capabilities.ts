/**
 * The request options an engine may or may not carry out, in the order they are checked, and
 * the one `refuse` both engines use: the first option the request uses that the engine's
 * capabilities mark unsupported is refused (exit 2 before any sandbox starts, see
 * src/cli/build-flags/options.ts refuseForEngine). Every engine declares every option, so a new
 * option does not compile until each engine says whether it has it.
 */
import {parseAnnotations} from '../oci/annotations.js';
import type {BuildRequest} from '../request/build-request.js';
import type {Refusal} from './plan.js';

/** How to tell whether a request uses an option; `flag` is what the user typed. */
const requestOptions = {
	progressRawjson: {flag: '--progress rawjson', used: (request: BuildRequest) => request.progress === 'rawjson'},
	noCacheFilter: {flag: '--no-cache-filter', used: (request: BuildRequest) => request.engineOptions.noCacheFilter.length > 0},
	sbom: {flag: '--sbom', used: (request: BuildRequest) => request.engineOptions.sbom !== undefined},
	provenance: {flag: '--provenance', used: (request: BuildRequest) => request.engineOptions.provenance !== undefined},
	/** A folder to read the cache from that is not the folder written (--cache-from without the same --cache-to). */
	cacheFromOther: {flag: '--cache-from', used: (request: BuildRequest) => request.cache.kind === 'local' && request.cache.from !== undefined && request.cache.from !== request.cache.to},
	target: {flag: '--target', used: (request: BuildRequest) => request.target !== undefined},
	noCache: {flag: '--no-cache', used: (request: BuildRequest) => request.noCache},
	pull: {flag: '--pull', used: (request: BuildRequest) => request.engineOptions.pull},
	networkNone: {flag: '--network none', used: (request: BuildRequest) => request.engineOptions.network === 'none'},
	networkHost: {flag: '--network host', used: (request: BuildRequest) => request.engineOptions.network === 'host'},
	addHosts: {flag: '--add-host', used: (request: BuildRequest) => request.engineOptions.addHosts.length > 0},
	secrets: {flag: '--secret', used: (request: BuildRequest) => request.engineOptions.secrets.length > 0},
	ssh: {flag: '--ssh', used: (request: BuildRequest) => request.engineOptions.ssh.length > 0},
	shmSize: {flag: '--shm-size', used: (request: BuildRequest) => request.engineOptions.shmSize !== undefined},
	ulimits: {flag: '--ulimit', used: (request: BuildRequest) => request.engineOptions.ulimits.length > 0},
	sourceDateEpoch: {flag: 'SOURCE_DATE_EPOCH', used: (request: BuildRequest) => request.engineOptions.sourceDateEpoch !== undefined},
	labels: {flag: '--label', used: (request: BuildRequest) => request.engineOptions.labels.length > 0},
	annotations: {flag: '--annotation', used: (request: BuildRequest) => request.engineOptions.annotations.length > 0},
	/** An annotation for the index or a descriptor, or for one platform only (buildx's TYPE[PLATFORM]:KEY). */
	typedAnnotations: {flag: '--annotation TYPE:KEY=VALUE', used: (request: BuildRequest) => parseAnnotations(request.engineOptions.annotations).some(annotation => annotation.type !== 'manifest' || annotation.platform !== undefined)},
	buildArgs: {flag: '--build-arg', used: (request: BuildRequest) => request.buildArgs.length > 0},
	localContexts: {flag: '--build-context NAME=DIR', used: (request: BuildRequest) => request.engineOptions.localContexts.length > 0},
	layoutContexts: {flag: '--build-context NAME=oci-layout://DIR', used: (request: BuildRequest) => request.buildContexts.length > 0},
	cacheTo: {flag: '--cache-to', used: (request: BuildRequest) => request.cache.kind === 'local' && request.cache.to !== undefined},
} as const;

export type RequestOption = keyof typeof requestOptions;

/** What an engine does with an option: carries it out, or cannot, with why and what to do instead. */
export type Capability = {readonly supported: true} | {readonly supported: false; readonly why: string; readonly hint: string};

export type Capabilities = Readonly<Record<RequestOption, Capability>>;

export const supported: Capability = {supported: true};

/** The options `request` uses, in checking order (for tests and diagnostics). */
export const optionsUsed = (request: BuildRequest): RequestOption[] =>
	(Object.keys(requestOptions) as RequestOption[]).filter(option => requestOptions[option].used(request));

/** The first option `request` uses that `capabilities` does not support, as a refusal. */
export const refuseWith = (capabilities: Capabilities, request: BuildRequest): Refusal | undefined => {
	for (const option of optionsUsed(request)) {
		const capability = capabilities[option];
		if (!capability.supported) {
			return {message: `${requestOptions[option].flag}: ${capability.why}`, hint: capability.hint};
		}
	}

	return undefined;
};
