/**
 * Shared by the engine tests: requests made with the real flag grammar (toBuildRequest) from a
 * scratch project, and the sandbox layout the host hands an engine (the paths of
 * src/agent/agent-args.ts sandboxPaths).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after} from 'node:test';
import {sandboxPaths} from '../../src/agent/agent-args.js';
import {toBuildRequest, type RawBuildOptions} from '../../src/cli/build-flags/options.js';
import type {SandboxLayout} from '../../src/engines/plan.js';
import type {BuildRequest} from '../../src/request/build-request.js';

export const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-engines-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));
fs.mkdirSync(path.join(root, 'ctx'));
fs.writeFileSync(path.join(root, 'ctx', 'Dockerfile'), 'FROM base\n');
fs.writeFileSync(path.join(root, 'ctx', 'Other.Dockerfile'), 'FROM scratch\n');
fs.mkdirSync(path.join(root, 'layout'));
fs.writeFileSync(path.join(root, 'layout', 'index.json'), '{}');
fs.writeFileSync(path.join(root, 'layout', 'oci-layout'), '{}');
fs.mkdirSync(path.join(root, 'assets'));
fs.writeFileSync(path.join(root, 'token.txt'), 'secret');
fs.writeFileSync(path.join(root, 'id_test'), '-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n');
fs.mkdirSync(path.join(root, 'cache-in'));

/** A request for `exobuild build [flags] ctx`, the flags as commander hands them over. */
export const request = (overrides: Partial<RawBuildOptions> = {}, env: NodeJS.ProcessEnv = {}): BuildRequest => toBuildRequest('ctx', {
	platform: ['linux/ppc64le'], tag: [], buildArg: [], cache: true, buildContext: [], output: [], progress: 'plain', engine: 'auto', driver: 'linux-userns',
	...overrides,
}, {cwd: root, env, warn() {}});

export const digest = `sha256:${'d'.repeat(64)}`;

/** The layout the pipeline builds for `request` (secrets: src= mounted, env= on the agent's tmpfs). */
export const layoutFor = (built: BuildRequest, cache: SandboxLayout['cache'] = {dir: sandboxPaths.cache}): SandboxLayout => ({
	context: sandboxPaths.context,
	dockerfile: `${sandboxPaths.dockerfileDir}/${path.basename(built.dockerfile)}`,
	outputLayout: `${sandboxPaths.out}/oci-layout`,
	state: sandboxPaths.state,
	cache,
	secretFiles: new Map(built.engineOptions.secrets.map(secret => [secret.id, secret.src === undefined ? `/run/exobuild-secrets/${secret.id}` : `${sandboxPaths.secrets}/${secret.id}`])),
	sshSources: new Map(built.engineOptions.ssh.map(source => [source.id, `${sandboxPaths.ssh}/${source.id}`])),
	localContexts: new Map(built.engineOptions.localContexts.map(([name], index) => [name, `${sandboxPaths.localContexts}/${index}`])),
	bases: built.buildContexts.map((context, index) => ({
		name: context.name,
		layout: `${sandboxPaths.contexts}/${index}`,
		topDigest: digest,
		views: new Map(built.platforms.map(platform => [platform.id, `${sandboxPaths.views}/${index}/${platform.id.replaceAll('/', '-')}`])),
	})),
});
