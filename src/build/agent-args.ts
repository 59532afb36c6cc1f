/**
 * The sandbox's mounts and the agent's argv for a build request (docs/agent-protocol.md).
 * Pure: no I/O, so the exact command line is unit-tested.
 */
import path from 'node:path';
import {handlerSpec, type Platform} from '../platforms/parse.js';
import type {Mount} from '../sandboxes/runtime.js';
import type {BuildRequest} from './request.js';

export const sandboxPaths = {
	context: '/exobuild/context',
	dockerfileDir: '/exobuild/dockerfile',
	contexts: '/exobuild/contexts',
	views: '/exobuild/views',
	out: '/exobuild/out',
	state: '/exobuild/state',
} as const;

/** A platform id as a file name: linux/arm/v7 → linux-arm-v7. */
export const platformSlug = (platformId: string): string => platformId.replaceAll('/', '-');

/** A named build context after its OCI layout was resolved on the host. */
export interface ResolvedBuildContext {
	readonly name: string;
	readonly layoutDir: string;
	/** Digest of the layout's top-level descriptor (for BuildKit's oci-layout://NAME@DIGEST). */
	readonly topDigest: string;
}

export interface HostScratch {
	/** Host folder mounted rw at /exobuild/out. */
	readonly outDir: string;
	/** Host folder mounted ro at /exobuild/views, holding views/<i>/<platform-slug>/ (one-platform layouts). */
	readonly viewsDir: string;
}

export const buildMounts = (request: BuildRequest, contexts: readonly ResolvedBuildContext[], scratch: HostScratch): Mount[] => [
	{hostPath: request.contextDir, sandboxPath: sandboxPaths.context, readOnly: true},
	{hostPath: path.dirname(request.dockerfile), sandboxPath: sandboxPaths.dockerfileDir, readOnly: true},
	...contexts.map((context, index) => ({hostPath: context.layoutDir, sandboxPath: `${sandboxPaths.contexts}/${index}`, readOnly: true})),
	...(contexts.length > 0 ? [{hostPath: scratch.viewsDir, sandboxPath: sandboxPaths.views, readOnly: true}] : []),
	{hostPath: scratch.outDir, sandboxPath: sandboxPaths.out, readOnly: false},
];

/** `--platform ID --handler ID=NAME:MAGIC:MASK:UNAME` of each platform (build and prove). */
export const platformHandlerArgs = (platforms: readonly Platform[]): string[] =>
	platforms.flatMap(platform => ['--platform', platform.id, '--handler', `${platform.id}=${handlerSpec(platform.arch)}:${platform.arch.unameMachine}`]);

export const agentArgs = (request: BuildRequest, contexts: readonly ResolvedBuildContext[]): string[] => {
	const args = ['build', '--engine', request.engine, ...platformHandlerArgs(request.platforms)];

	args.push(
		'--context', sandboxPaths.context,
		'--dockerfile', `${sandboxPaths.dockerfileDir}/${path.basename(request.dockerfile)}`,
		'--output', `${sandboxPaths.out}/oci-layout`,
		'--state-dir', sandboxPaths.state,
	);
	for (const tag of request.tags) {
		args.push('--tag', tag);
	}

	for (const [key, value] of request.buildArgs) {
		args.push('--build-arg', `${key}=${value}`);
	}

	if (request.target !== undefined) {
		args.push('--target', request.target);
	}

	if (request.noCache) {
		args.push('--no-cache');
	}

	for (const [index, context] of contexts.entries()) {
		args.push('--base', `${context.name}=${sandboxPaths.contexts}/${index}@${context.topDigest}`);
		for (const platform of request.platforms) {
			args.push('--base-platform', `${context.name}=${platform.id}=${sandboxPaths.views}/${index}/${platformSlug(platform.id)}`);
		}
	}

	return args;
};
