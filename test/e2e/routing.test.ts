/**
 * Builds routed to a real remote BuildKit node (test/fixtures/remote-buildkitd.ts: buildkitd
 * v0.32.2 in its own namespaces with its own binfmt_misc, reporting linux/s390x only, on
 * tcp://127.0.0.1:PORT with mTLS). `build --platform linux/ppc64le,linux/s390x` gives one index
 * whose s390x image the node built (its own cache records, read with buildctl du, hold the RUN
 * with this run's nonce) and whose ppc64le image the local sandbox built (the node's records do
 * not). A node that does not answer fails the build before it starts (exit 2, naming it), or
 * with --fallback local builds its platform locally. Ctrl-C stops every part. Nothing is left
 * running.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {execa} from 'execa';
import {inspectArchive} from '../../src/oci/index.js';
import {parsePlatform} from '../../src/platforms/parse.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {startRemoteBuildkitd, type RemoteBuildkitd} from '../fixtures/remote-buildkitd.js';
import {extractUpstream, upstreamSkip} from '../fixtures/upstream.js';
import {assertNothingLeft, exobuild, exobuildEnv, failure, fixturesDir, leftovers, makeContext} from './helpers.js';

const skip = upstreamSkip('buildkit');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-routing-'));
const config = path.join(work, 'config');
const env = {XDG_CONFIG_HOME: config};
const platforms = 'linux/ppc64le,linux/s390x';
let node: RemoteBuildkitd | undefined;
let busybox: string;
let buildctl: string;

before(async () => {
	if (skip !== undefined) {
		return;
	}

	Object.assign(process.env, exobuildEnv);
	busybox = await busyboxLayout(['linux/ppc64le', 'linux/s390x'], path.join(fixturesDir, 'busybox'));
	node = await startRemoteBuildkitd(parsePlatform('linux/s390x'));
	buildctl = path.join(await extractUpstream('buildkit', path.join(work, 'upstream')), 'buildctl');
	const {client, address} = node;
	const added = await exobuild(['node', 'add', 'z', address, '--platform', 'linux/s390x', '--tls-ca', client.ca, '--tls-cert', client.cert, '--tls-key', client.key], {env});
	assert.equal(added.exitCode, 0, added.all);
});

after(async () => {
	await node?.stop();
	fs.rmSync(work, {recursive: true, force: true});
	await assertNothingLeft();
});

/** The node's own build records: `buildctl du --verbose` against it, from the host. */
const nodeRecords = async (): Promise<string> => {
	const {client, address} = node!;
	const du = await execa(buildctl, ['--addr', address, '--tlscacert', client.ca, '--tlscert', client.cert, '--tlskey', client.key, 'du', '--verbose']);
	return du.stdout;
};

const contextWith = (name: string, nonce: string, run = 'true'): string => makeContext(path.join(work, name), {
	Dockerfile: `FROM busybox\nRUN uname -m > /uname.txt && echo ${nonce} > /nonce.txt && ${run}\n`,
});

const build = (context: string, extra: readonly string[], dest: string) => exobuild([
	'build', '--progress', 'plain', '--platform', platforms, '--build-context', `busybox=oci-layout://${busybox}`,
	'-t', 'e2e/routed:1', '--output', `type=oci,dest=${dest}`, ...extra, context,
], {env});

const assertImages = async (dest: string, nonce: string): Promise<void> => {
	const archive = await inspectArchive(dest);
	assert.equal(archive.kind, 'index');
	assert.deepEqual(archive.images.map(image => image.platform), ['linux/ppc64le', 'linux/s390x'], 'one index, in the order of --platform');
	for (const image of archive.images) {
		assert.equal((await image.readFile('/uname.txt'))?.toString().trim(), image.platform === 'linux/s390x' ? 's390x' : 'ppc64le', image.platform);
		assert.equal((await image.readFile('/nonce.txt'))?.toString().trim(), nonce);
	}
};

test('s390x goes to the node that serves it, ppc64le is built in the local sandbox, one index; the node\'s own records show its solve', {skip}, async () => {
	const nonce = crypto.randomBytes(8).toString('hex');
	const dest = path.join(work, 'routed.oci.tar');
	const metadata = path.join(work, 'routed.metadata.json');
	const result = await build(contextWith('routed', nonce), ['--label', 'routed.by=exobuild', '--annotation', 'index:org.example.routed=yes', '--annotation', 'org.example.each=manifest', '--metadata-file', metadata], dest);
	assert.equal(result.exitCode, 0, `${failure(result, 40)}\nnode: ${node!.log().slice(-2000)}`);
	await assertImages(dest, nonce);
	// The outputs of the merged index: its tag, the label on both images, the result files.
	const archive = await inspectArchive(dest);
	assert.deepEqual(archive.tags, ['docker.io/e2e/routed:1']);
	assert.deepEqual(archive.images.map(image => image.config.config?.Labels?.['routed.by']), ['exobuild', 'exobuild']);
	assert.equal(String(result.stdout).trim(), archive.topDigest);
	// buildx's annotations: the index's on the merged index (each part's solve gets only the
	// manifests' own: BuildKit refuses index annotations on a one-platform part), the manifests' on both.
	const blob = async (digest: string): Promise<{annotations?: Record<string, string>}> =>
		JSON.parse((await execa('tar', ['-xOf', dest, `blobs/sha256/${digest.slice('sha256:'.length)}`])).stdout) as {annotations?: Record<string, string>};
	assert.equal((await blob(archive.topDigest)).annotations?.['org.example.routed'], 'yes');
	for (const image of archive.images) {
		assert.equal((await blob(image.manifestDigest)).annotations?.['org.example.each'], 'manifest', image.platform);
	}

	assert.equal((JSON.parse(fs.readFileSync(metadata, 'utf8')) as Record<string, unknown>)['containerimage.digest'], archive.topDigest);
	const stderr = String(result.stderr);
	assert.match(stderr, /\[linux\/s390x @z[ \]].*RUN uname -m/, 'the node is named in the s390x steps');
	assert.match(stderr, /\[linux\/ppc64le[ \]].*RUN uname -m/);
	assert.doesNotMatch(stderr, /\[linux\/ppc64le @/, 'ppc64le was not routed');
	// The node's cache records (buildctl du --verbose: each record's Description is the step) hold
	// this run's RUN: the node ran it (its only worker is linux/s390x; the local part never reaches it).
	const records = await nodeRecords();
	assert.ok(records.split('\n').some(line => line.startsWith('Description:') && line.includes(`echo ${nonce}`)), `the node's records hold the RUN with ${nonce}:\n${records.slice(-3000)}`);
});

test('--progress rawjson of a routed build: the node\'s vertices have digests of their own and names saying @z', {skip}, async () => {
	const nonce = crypto.randomBytes(8).toString('hex');
	const dest = path.join(work, 'rawjson.oci.tar');
	const result = await exobuild([
		'build', '--progress', 'rawjson', '--platform', platforms, '--build-context', `busybox=oci-layout://${busybox}`,
		'--output', `type=oci,dest=${dest}`, contextWith('rawjson', nonce),
	], {env});
	assert.equal(result.exitCode, 0, failure(result, 30));
	await assertImages(dest, nonce);
	const names = new Map<string, Set<string>>();
	for (const line of String(result.stderr).split('\n').filter(text => text.startsWith('{'))) {
		for (const vertex of (JSON.parse(line) as {vertexes?: Array<{digest: string; name?: string}>}).vertexes ?? []) {
			if (vertex.name !== undefined) {
				names.set(vertex.digest, new Set([...(names.get(vertex.digest) ?? []), vertex.name]));
			}
		}
	}

	// Both solves load the same Dockerfile: the same LLB vertex, which BuildKit gives the same digest in both.
	const loads = [...names].filter(([, named]) => [...named].some(name => name.includes('load build definition')));
	assert.equal(loads.length, 2, `two vertices, one per solve: ${JSON.stringify(loads.map(([digest, named]) => [digest, [...named]]))}`);
	assert.deepEqual(loads.map(([, named]) => [...named].some(name => name.includes('@z'))).sort(), [false, true]);
	assert.ok([...names.values()].some(named => [...named].some(name => name.startsWith('[linux/s390x @z') && name.includes('RUN uname'))));
	assert.ok([...names].every(([, named]) => named.size === 1), 'each digest names one vertex');
});

test('a secret reaches the node\'s RUN through buildctl\'s session (env=: on the part sandbox\'s tmpfs only); it is in no image and never printed', {skip}, async () => {
	const value = `routed-secret-${crypto.randomBytes(8).toString('hex')}`;
	// A nonce in the RUN: BuildKit's cache key has no secret value, and the local state is kept between runs.
	const context = makeContext(path.join(work, 'secret'), {Dockerfile: `FROM busybox\nRUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d" " -f1 > /tok.sum && echo ${crypto.randomBytes(8).toString('hex')} > /nonce\n`});
	const dest = path.join(work, 'secret.oci.tar');
	const result = await exobuild([
		'build', '--progress', 'plain', '--platform', platforms, '--build-context', `busybox=oci-layout://${busybox}`, '--secret', 'id=tok,env=ROUTED_TOKEN',
		'--output', `type=oci,dest=${dest}`, context,
	], {env: {...env, ROUTED_TOKEN: value}});
	assert.equal(result.exitCode, 0, failure(result, 30));
	assert.match(String(result.stderr), /@z/);
	const archive = await inspectArchive(dest);
	const expected = crypto.createHash('sha256').update(value).digest('hex');
	for (const image of archive.images) {
		assert.equal((await image.readFile('/tok.sum'))?.toString().trim(), expected, image.platform);
		assert.equal((await image.readFile('/run/secrets/tok'))?.length ?? 0, 0, 'the secret is not in the image');
	}

	assert.ok(!String(result.all).includes(value), 'the secret is never printed');
});

test('--cache-to DIR with a node: the local part exports to DIR, the node\'s part to DIR/node-z, each a BuildKit cache layout', {skip}, async () => {
	const cache = path.join(work, 'cache-out');
	const dest = path.join(work, 'cached.oci.tar');
	const result = await build(contextWith('cached', crypto.randomBytes(8).toString('hex')), ['--cache-to', `type=local,dest=${cache}`], dest);
	assert.equal(result.exitCode, 0, failure(result, 30));
	for (const dir of [cache, path.join(cache, 'node-z')]) {
		const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) as {manifests: Array<{digest: string}>};
		assert.ok(index.manifests.length > 0, dir);
		assert.ok(fs.statSync(path.join(dir, 'blobs', 'sha256', index.manifests[0]!.digest.slice(7))).isFile(), dir);
	}
});

/** Pids of the test node's processes (its namespace's, whose argv names its address) and their descendants. */
const nodeProcesses = async (): Promise<Map<number, string>> => {
	const ps = await execa('ps', ['-eo', 'pid=,ppid=,args=']);
	const rows = ps.stdout.split('\n').map(line => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line)).filter(match => match !== null).map(match => ({pid: Number(match[1]), ppid: Number(match[2]), args: match[3]!}));
	const found = new Map(rows.filter(row => row.args.includes(node!.address)).map(row => [row.pid, row.args]));
	for (let grew = true; grew;) {
		grew = false;
		for (const row of rows) {
			if (!found.has(row.pid) && found.has(row.ppid)) {
				found.set(row.pid, row.args);
				grew = true;
			}
		}
	}

	return found;
};

/** Whether a process of the test node has `text` in its argv, waiting up to 60 s for one. */
const nodeRuns = async (text: string): Promise<boolean> => {
	for (let attempt = 0; attempt < 300; attempt++) {
		if ([...(await nodeProcesses()).values()].some(args => args.includes(text))) {
			return true;
		}

		await new Promise(resolve => setTimeout(resolve, 200));
	}

	return false;
};

/** assertNothingLeft, but for the test node's own processes (it runs on until `after`). */
const assertNothingLeftButTheNode = async (): Promise<void> => {
	let left: Awaited<ReturnType<typeof leftovers>> | undefined;
	for (let attempt = 0; attempt < 50; attempt++) {
		const all = await leftovers();
		const ofNode = await nodeProcesses();
		left = {...all, processes: all.processes.filter(line => !ofNode.has(Number(line.split(' ')[0])))};
		if (left.processes.length === 0 && left.mounts.length === 0 && left.runs.length === 0) {
			return;
		}

		await new Promise(resolve => setTimeout(resolve, 100));
	}

	assert.deepEqual(left, {processes: [], mounts: [], runs: []});
};

/** A loopback port nothing listens on. */
const closedPort = async (): Promise<number> => new Promise(resolve => {
	const server = net.createServer().listen(0, '127.0.0.1', () => {
		const {port} = server.address() as net.AddressInfo;
		server.close(() => resolve(port));
	});
});

test('a node that does not answer fails the build before it starts (exit 2, its name and address); with --fallback local its platform is built locally', {skip}, async () => {
	const {client} = node!;
	const down = `tcp://127.0.0.1:${await closedPort()}`;
	assert.equal((await exobuild(['node', 'add', 'gone', down, '--platform', 'linux/s390x', '--tls-ca', client.ca, '--tls-cert', client.cert, '--tls-key', client.key], {env})).exitCode, 0);
	const dest = path.join(work, 'down.oci.tar');
	fs.writeFileSync(dest, 'old output');
	const nonce = crypto.randomBytes(8).toString('hex');
	const context = contextWith('down', nonce);
	const refused = await build(context, ['--node', 'gone'], dest);
	assert.equal(refused.exitCode, 2, failure(refused));
	assert.match(String(refused.stderr), new RegExp(`^exobuild: node gone \\(${down.replaceAll('.', '\\.')}\\) does not answer: .*connection refused`, 'm'));
	assert.match(String(refused.stderr), /hint: .*--fallback local/);
	assert.doesNotMatch(String(refused.stderr), /RUN uname/, 'no build started');
	assert.equal(fs.readFileSync(dest, 'utf8'), 'old output');

	const fallback = await build(context, ['--node', 'gone', '--fallback', 'local'], dest);
	assert.equal(fallback.exitCode, 0, failure(fallback, 30));
	assert.equal(String(fallback.stderr).split('\n').filter(line => /node gone .* does not answer .*built in the local sandbox/.test(line)).length, 1, 'one warning line');
	assert.doesNotMatch(String(fallback.stderr), /@gone|@z/);
	await assertImages(dest, nonce);
	assert.ok(!(await nodeRecords()).includes(nonce), 'node z did not build it');
	assert.equal((await exobuild(['node', 'rm', 'gone'], {env})).exitCode, 0);
});

/**
 * Starts a routed build over an old output at `dest` whose RUN sleeps 120 s, and returns it once
 * the node runs that RUN (its step line seen, the sleep among the node's processes).
 */
const startNodeSleeping = async (name: string, dest: string): Promise<{running: ReturnType<typeof build>}> => {
	fs.writeFileSync(dest, 'old output');
	const running = build(contextWith(name, crypto.randomBytes(8).toString('hex'), 'sleep 120'), [], dest);
	let seen = '';
	running.stderr?.on('data', (chunk: Buffer) => {
		seen += chunk.toString();
	});
	const deadline = Date.now() + 120_000;
	while (!/@z[ \]].*RUN uname/.test(seen) && Date.now() < deadline) {
		await new Promise(resolve => setTimeout(resolve, 200));
	}

	assert.match(seen, /@z[ \]].*RUN uname/, 'the node started its RUN');
	assert.ok(await nodeRuns('sleep 120'), 'the node runs the RUN (seen from its processes)');
	return {running}; // Wrapped: the subprocess is a promise, which returning it would await.
};

test('Ctrl-C while the node and the local sandbox build: exit 130, the old output intact, nothing left running', {skip}, async () => {
	const dest = path.join(work, 'cancel.oci.tar');
	const {running} = await startNodeSleeping('cancel', dest);
	running.kill('SIGINT');
	const result = await running;
	assert.equal(result.exitCode, 130, failure(result));
	assert.equal(fs.readFileSync(dest, 'utf8'), 'old output');
	await assertNothingLeftButTheNode();
	// The node's solve was cancelled: its RUN (sleep 120, under the node's emulator) is gone soon after.
	let sleeping: string[] = [];
	for (let attempt = 0; attempt < 100; attempt++) {
		sleeping = [...(await nodeProcesses()).values()].filter(args => args.includes('sleep 120'));
		if (sleeping.length === 0) {
			break;
		}

		await new Promise(resolve => setTimeout(resolve, 200));
	}

	assert.deepEqual(sleeping, [], 'the node runs no RUN of the cancelled build');
});

test('a node killed mid-build fails the build naming it; the old output is intact and nothing is left running', {skip}, async () => {
	const dest = path.join(work, 'killed.oci.tar');
	const {running} = await startNodeSleeping('killed', dest);
	await node!.kill();
	const result = await running;
	assert.equal(result.exitCode, 1, failure(result, 30));
	assert.match(String(result.stderr), new RegExp(`^exobuild: .*the build on node z \\(${node!.address.replaceAll('.', '\\.')}\\) failed`, 'm'));
	assert.equal(fs.readFileSync(dest, 'utf8'), 'old output');
	await assertNothingLeftButTheNode();
});
