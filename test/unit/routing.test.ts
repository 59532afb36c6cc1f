/**
 * Routing (src/pipeline/routing.ts): which node builds which platform, the --node grammar, what
 * happens to a node that does not answer, the plan of a node's part (src/engines/buildkit/plan.ts
 * planRemoteBuildKit) and the node in step names.
 */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {UserError} from '../../src/errors.js';
import {planRemoteBuildKit} from '../../src/engines/buildkit/plan.js';
import {buildctlArgv, type NodeProbe, type NodeTarget} from '../../src/nodes/probe.js';
import type {NodeRecord, NodesDocument} from '../../src/nodes/store.js';
import {checkNodes, manifestAnnotations, nodeTarget, planRoutes, refuseRouted} from '../../src/pipeline/routing.js';
import {labelEngineLine, nodeVertexDigest} from '../../src/pipeline/run-agent-stage.js';
import {layoutFor, request} from './engines-fixtures.js';

const tls = {ca: '/tls/ca.pem', cert: '/tls/cert.pem', key: '/tls/key.pem'};
const record = (name: string, platforms: string[]): NodeRecord => ({
	name, address: `tcp://10.0.0.${name.length}:1234`, platforms, platformsFrom: 'flag', tls, added: '2026-01-01T00:00:00.000Z',
});
const nodes: NodesDocument = {version: 1, nodes: [record('z', ['linux/s390x']), record('power', ['linux/ppc64le', 'linux/s390x'])]};
const ids = (list: ReadonlyArray<{id: string}>): string[] => list.map(platform => platform.id);
const routed = (plan: ReturnType<typeof planRoutes>): Array<[string, string[]]> => plan.nodes.map(part => [part.node.name, ids(part.platforms)]);

test('each platform a configured node serves goes to the first such node; the rest stay local, in --platform order', () => {
	const plan = planRoutes(request({platform: ['linux/arm64,linux/s390x,linux/ppc64le']}), nodes);
	assert.deepEqual(ids(plan.local), ['linux/arm64']);
	assert.deepEqual(routed(plan), [['z', ['linux/s390x']], ['power', ['linux/ppc64le']]]);
	assert.deepEqual(routed(planRoutes(request({platform: ['linux/arm64']}), nodes)), [], 'no node serves it: all local');
	assert.deepEqual(routed(planRoutes(request({platform: ['linux/s390x']}), {version: 1, nodes: []})), [], 'no nodes: all local');
});

test('--node NAME=P overrides; --node NAME takes the platforms it serves; unknown or useless nodes are refused', () => {
	assert.deepEqual(routed(planRoutes(request({platform: ['linux/s390x,linux/ppc64le'], node: ['power=linux/s390x']}), nodes)), [['power', ['linux/s390x', 'linux/ppc64le']]]);
	const plan = planRoutes(request({platform: ['linux/s390x,linux/ppc64le,linux/arm64'], node: ['z=linux/arm64']}), nodes);
	assert.deepEqual(routed(plan), [['z', ['linux/s390x', 'linux/arm64']], ['power', ['linux/ppc64le']]]);
	assert.deepEqual(routed(planRoutes(request({platform: ['linux/s390x'], node: ['power']}), nodes)), [['power', ['linux/s390x']]]);
	assert.throws(() => planRoutes(request({platform: ['linux/s390x'], node: ['nope']}), nodes), /^UserError: no node named "nope"$/);
	assert.throws(() => planRoutes(request({platform: ['linux/arm64'], node: ['z']}), nodes), /--node z: it serves none of the platforms asked \(it serves linux\/s390x\)/);
});

test('the --node grammar: a platform of the build, given to one node, each node once (exit 2)', () => {
	const refused = (node: string[], pattern: RegExp): void => {
		assert.throws(() => request({platform: ['linux/s390x,linux/ppc64le'], node}), (error: unknown) => error instanceof UserError && error.exitCode === 2 && pattern.test(error.message));
	};

	refused(['z=linux/arm64'], /--node z=linux\/arm64: linux\/arm64 is not a platform of this build/);
	refused(['z=linux/s390x', 'power=s390x'], /linux\/s390x is given to both z and power/);
	refused(['z', 'Z=linux/s390x'], /--node z is given twice/);
	refused(['z='], /no platform after =/);
	refused(['-bad'], /--node -bad: /);
	assert.throws(() => request({platform: ['linux/s390x'], fallback: 'remote'}), /invalid --fallback "remote"/);
	assert.deepEqual(request({platform: ['linux/s390x'], fallback: 'local'}).routing?.fallback, 'local');
});

const answered = (workerPlatforms: string[]): NodeProbe => ({answered: true, version: 'v0.32.2', nativePlatforms: workerPlatforms.slice(0, 1), workerPlatforms});

test('a node that does not answer fails with its name and address (E_NODE_DOWN, exit 2), or with --fallback local builds locally with one warning', async () => {
	const built = request({platform: ['linux/arm64,linux/s390x,linux/ppc64le']});
	const plan = planRoutes(built, nodes);
	const asked: string[] = [];
	const probe = async (node: NodeTarget): Promise<NodeProbe> => {
		asked.push(node.name);
		return node.name === 'power' ? {answered: false, reason: 'connection refused'} : answered(['linux/s390x', 'linux/amd64']);
	};

	await assert.rejects(checkNodes(plan, {fallback: 'none', probe, warn() {}, order: built.platforms}), (error: unknown) => error instanceof UserError
		&& error.code === 'E_NODE_DOWN' && error.exitCode === 2 && error.message === 'node power (tcp://10.0.0.5:1234) does not answer: connection refused' && /--fallback local/.test(error.hint ?? ''));
	assert.deepEqual(asked.sort(), ['power', 'z'], 'every node in use is asked');
	const warnings: string[] = [];
	const fallen = await checkNodes(plan, {fallback: 'local', probe, warn: message => warnings.push(message), order: built.platforms});
	assert.deepEqual(ids(fallen.local), ['linux/arm64', 'linux/ppc64le']);
	assert.deepEqual(routed(fallen), [['z', ['linux/s390x']]]);
	assert.deepEqual(warnings, ['node power (tcp://10.0.0.5:1234) does not answer (connection refused): linux/ppc64le built in the local sandbox (--fallback local)']);
	await assert.rejects(checkNodes(plan, {fallback: 'local', probe: async () => answered(['linux/amd64']), warn() {}, order: built.platforms}), /node z \(tcp:\/\/10\.0\.0\.1:1234\) does not build linux\/s390x \(its workers: linux\/amd64\)/);
});

test('a routed build needs BuildKit (exit 2); without nodes nothing is refused', () => {
	const plan = planRoutes(request({platform: ['linux/s390x']}), nodes);
	assert.throws(() => refuseRouted(request({platform: ['linux/s390x']}), 'buildah', plan), (error: unknown) => error instanceof UserError && error.exitCode === 2 && /nodes \(z\) build with BuildKit/.test(error.message));
	refuseRouted(request({platform: ['linux/s390x'], progress: 'rawjson'}), 'buildkit', plan);
	refuseRouted(request({platform: ['linux/arm64']}), 'buildah', planRoutes(request({platform: ['linux/arm64']}), nodes));
});

test('rawjson of a node\'s part: its vertex digests rewritten the same way everywhere they appear, names labelled; the local part keeps its digests', () => {
	const a = `sha256:${'a'.repeat(64)}`;
	const b = `sha256:${'b'.repeat(64)}`;
	const line = JSON.stringify({
		vertexes: [{digest: a, inputs: [b], name: '[1/2] RUN uname -m'}, {digest: b, name: '[internal] load build definition from Dockerfile'}],
		statuses: [{id: 'x', vertex: a}], logs: [{vertex: a, data: 'aGk='}], warnings: [{vertex: b}],
	});
	const labelled = JSON.parse(labelEngineLine(line, {platform: 'linux/s390x', node: 'z'})) as {vertexes: Array<{digest: string; inputs?: string[]; name: string}>; statuses: Array<{vertex: string}>; logs: Array<{vertex: string; data: string}>; warnings: Array<{vertex: string}>};
	const [run, load] = labelled.vertexes;
	assert.equal(run!.digest, nodeVertexDigest('z', a));
	assert.match(run!.digest, /^sha256:[a-f0-9]{64}$/);
	assert.notEqual(run!.digest, a);
	assert.deepEqual(run!.inputs, [nodeVertexDigest('z', b)]);
	assert.equal(load!.digest, nodeVertexDigest('z', b));
	assert.equal(labelled.statuses[0]!.vertex, run!.digest);
	assert.equal(labelled.logs[0]!.vertex, run!.digest);
	assert.equal(labelled.logs[0]!.data, 'aGk=');
	assert.equal(labelled.warnings[0]!.vertex, load!.digest);
	assert.equal(run!.name, '[linux/s390x @z 1/2] RUN uname -m');
	assert.equal(load!.name, '[internal @z] load build definition from Dockerfile');
	assert.notEqual(nodeVertexDigest('z', a), nodeVertexDigest('power', a), 'two nodes: two digests');
	const local = JSON.parse(labelEngineLine(line, {platform: 'linux/ppc64le'})) as {vertexes: Array<{digest: string; name: string}>};
	assert.equal(local.vertexes[0]!.digest, a);
	assert.equal(local.vertexes[0]!.name, '[linux/ppc64le 1/2] RUN uname -m');
	assert.equal(labelEngineLine('{not json', {node: 'z'}), '{not json');
});

test('a node\'s part: no daemon, the same buildctl build against the node\'s address with its TLS files, failing with the node named', () => {
	const built = request({platform: ['linux/s390x'], secret: ['id=token,src=token.txt']});
	const node = nodes.nodes[0]!;
	const plan = planRemoteBuildKit(built, layoutFor(built), {name: node.name, address: node.address, client: buildctlArgv(nodeTarget(node))});
	assert.deepEqual(plan.steps.map(step => step.kind), ['version', 'run']);
	const run = plan.steps[1]!;
	assert.ok(run.kind === 'run');
	assert.deepEqual(run.argv.slice(0, 13), ['buildctl', '--addr', 'tcp://10.0.0.1:1234', '--timeout', '5', '--tlscacert', '/exobuild/node-tls/ca.pem', '--tlscert', '/exobuild/node-tls/cert.pem', '--tlskey', '/exobuild/node-tls/key.pem', 'build', '--frontend']);
	assert.ok(run.argv.includes('id=token,src=/exobuild/secrets/token'), 'secrets go through the session from the sandbox');
	assert.ok(run.argv.includes('platform=linux/s390x'));
	assert.equal(run.message, 'the build on node z (tcp://10.0.0.1:1234) failed (buildctl)');
});

test('a routed part\'s vertex lines say its platform and node', () => {
	assert.equal(labelEngineLine('#5 [1/2] RUN uname -m', {platform: 'linux/s390x', node: 'z'}), '#5 [linux/s390x @z 1/2] RUN uname -m');
	assert.equal(labelEngineLine('#5 [linux/s390x 2/3] RUN uname -m', {node: 'z'}), '#5 [linux/s390x @z 2/3] RUN uname -m');
	assert.equal(labelEngineLine('#3 [internal] load build definition from Dockerfile', {platform: 'linux/s390x', node: 'z'}), '#3 [internal @z] load build definition from Dockerfile');
	assert.equal(labelEngineLine('#5 [1/2] RUN x', {platform: 'linux/ppc64le'}), '#5 [linux/ppc64le 1/2] RUN x', 'the local part: its platform only');
	assert.equal(labelEngineLine('#5 DONE 0.3s', {platform: 'linux/s390x', node: 'z'}), '#5 DONE 0.3s');
});

test('each routed part applies only the manifests\' own annotations; the index\'s and descriptors\' are left to the merge', () => {
	assert.deepEqual(manifestAnnotations([['index:org.example.i', '1'], ['org.example.m', '2'], ['manifest[linux/s390x]:org.example.p', '3'], ['manifest,index:org.example.both', '4'], ['manifest-descriptor:org.example.d', '5']]), [
		['org.example.m', '2'], ['manifest[linux/s390x]:org.example.p', '3'], ['org.example.both', '4'],
	]);
});
