/**
 * `exobuild node` against a real remote BuildKit node (test/fixtures/remote-buildkitd.ts:
 * buildkitd v0.32.2 in its own namespaces with its own binfmt_misc, reporting linux/s390x only,
 * on tcp://127.0.0.1:PORT with mTLS): `node add` without --platform learns linux/s390x from the
 * node through buildctl in a throwaway sandbox; ls, ls --json and inspect show it; a wrong CA is
 * "not answering"; a down address fails `node add` with exit 2 naming it; rm removes it. The
 * records stay a valid nodes.json, 0600 in a 0700 folder, and nothing is left running.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {nodesDocumentSchema} from '../../src/nodes/store.js';
import {parsePlatform} from '../../src/platforms/parse.js';
import {startRemoteBuildkitd, type RemoteBuildkitd} from '../fixtures/remote-buildkitd.js';
import {upstreamSkip} from '../fixtures/upstream.js';
import {assertNothingLeft, exobuild, exobuildEnv, leftovers} from './helpers.js';

const skip = upstreamSkip('buildkit');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-nodes-'));
const config = path.join(work, 'config');
const env = {XDG_CONFIG_HOME: config};
let node: RemoteBuildkitd | undefined;

before(async () => {
	if (skip !== undefined) {
		return;
	}

	// The fixture makes (or finds) the e2e builder image, whose root filesystem it runs buildkitd from.
	Object.assign(process.env, exobuildEnv);
	node = await startRemoteBuildkitd(parsePlatform('linux/s390x'));
});

after(async () => {
	await node?.stop();
	fs.rmSync(work, {recursive: true, force: true});
	await assertNothingLeft();
});

const nodesJson = (): unknown => JSON.parse(fs.readFileSync(path.join(config, 'exobuild', 'nodes.json'), 'utf8'));

const assertPrivateRecords = (): void => {
	const folder = fs.lstatSync(path.join(config, 'exobuild'));
	const file = fs.lstatSync(path.join(config, 'exobuild', 'nodes.json'));
	assert.ok(folder.isDirectory() && file.isFile());
	assert.equal(folder.mode & 0o777, 0o700);
	assert.equal(file.mode & 0o777, 0o600);
	nodesDocumentSchema.parse(nodesJson());
};

/** A loopback port nothing listens on (taken, then given back). */
const closedPort = async (): Promise<number> => new Promise(resolve => {
	const server = net.createServer().listen(0, '127.0.0.1', () => {
		const {port} = server.address() as net.AddressInfo;
		server.close(() => resolve(port));
	});
});

test('node add with mTLS and no --platform learns linux/s390x from the node; ls, ls --json and inspect show it', {skip}, async () => {
	const {client, address} = node!;
	const added = await exobuild(['node', 'add', 'z15', address, '--tls-ca', client.ca, '--tls-cert', client.cert, '--tls-key', client.key], {env});
	assert.equal(added.exitCode, 0, `${added.all}\nbuildkitd: ${node!.log().slice(-2000)}`);
	assert.match(String(added.stdout), new RegExp(`^added node z15 \\(${address.replaceAll('.', '\\.')}\\): linux/s390x \\(reported by the node when it was added\\)$`));
	assertPrivateRecords();
	assert.deepEqual(nodesJson(), {
		version: 1,
		nodes: [{name: 'z15', address, platforms: ['linux/s390x'], platformsFrom: 'node', tls: {ca: client.ca, cert: client.cert, key: client.key}, added: (nodesJson() as {nodes: Array<{added: string}>}).nodes[0]!.added}],
	});

	const table = await exobuild(['node', 'ls'], {env});
	assert.equal(table.exitCode, 0, table.all);
	// execa drops the last newline.
	assert.equal(String(table.stdout), `NAME\tADDRESS\tPLATFORMS\tFROM\tTLS\nz15\t${address}\tlinux/s390x\tnode\tmtls`);
	const listed = await exobuild(['node', 'ls', '--json'], {env});
	assert.equal(listed.exitCode, 0, listed.all);
	assert.deepEqual(JSON.parse(String(listed.stdout)), (nodesJson() as {nodes: unknown[]}).nodes);

	const inspected = await exobuild(['node', 'inspect', 'z15', '--json'], {env});
	assert.equal(inspected.exitCode, 0, inspected.all);
	const status = (JSON.parse(String(inspected.stdout)) as {status: unknown}).status;
	const answer = status as {answered: boolean; version: string; nativePlatforms: string[]; workerPlatforms: string[]};
	assert.deepEqual({...answer, workerPlatforms: answer.workerPlatforms.slice(0, 1)}, {answered: true, version: 'v0.32.2', nativePlatforms: ['linux/s390x'], workerPlatforms: ['linux/s390x']});
	// BuildKit appends what the node can run besides: its machine's own (amd64 here), never s390x twice.
	assert.equal(answer.workerPlatforms.filter(id => id === 'linux/s390x').length, 1);
	const text = await exobuild(['node', 'inspect', 'z15'], {env});
	assert.equal(text.exitCode, 0, text.all);
	assert.match(String(text.stdout), /^Status: +answered\nBuildKit: +v0\.32\.2\nNative: +linux\/s390x\nWorkers: +linux\/s390x, .*\(its own first, then what else its machine runs: other native ones and emulators\)$/m);

	// A second add of the name is refused, and says how to remove it (buildx: an existing node is not replaced).
	const again = await exobuild(['node', 'add', 'Z15', address, '--platform', 's390x', '--tls-ca', client.ca, '--tls-cert', client.cert, '--tls-key', client.key], {env});
	assert.equal(again.exitCode, 2, again.all);
	assert.match(String(again.stderr), /^exobuild: a node named "z15" exists already\nhint: remove it first with `exobuild node rm z15`/);
});

test('a wrong CA: inspect says the node does not answer (exit 0); add without --platform fails exit 2 naming it', {skip}, async () => {
	const {client, address, wrongCa} = node!;
	const added = await exobuild(['node', 'add', 'mistrusted', address, '--platform', 'linux/s390x', '--tls-ca', wrongCa, '--tls-cert', client.cert, '--tls-key', client.key], {env});
	assert.equal(added.exitCode, 0, added.all);
	const inspected = await exobuild(['node', 'inspect', 'mistrusted'], {env});
	assert.equal(inspected.exitCode, 0, inspected.all);
	assert.match(String(inspected.stdout), /^Status: +not answering: .*certificate/m);
	const probed = await exobuild(['node', 'add', 'mistrusted2', address, '--tls-ca', wrongCa, '--tls-cert', client.cert, '--tls-key', client.key], {env});
	assert.equal(probed.exitCode, 2, probed.all);
	assert.match(String(probed.stderr), new RegExp(`^exobuild: node mistrusted2 \\(${address.replaceAll('.', '\\.')}\\) does not answer: .*certificate`, 'm'));
	assert.equal((await exobuild(['node', 'rm', 'mistrusted'], {env})).exitCode, 0);
});

test('node add of a down address fails exit 2 naming the node and the address; nothing is stored', {skip}, async () => {
	const {client} = node!;
	const down = `tcp://127.0.0.1:${await closedPort()}`;
	const before = fs.readFileSync(path.join(config, 'exobuild', 'nodes.json'), 'utf8');
	const result = await exobuild(['node', 'add', 'gone', down, '--tls-ca', client.ca, '--tls-cert', client.cert, '--tls-key', client.key], {env});
	assert.equal(result.exitCode, 2, result.all);
	assert.match(String(result.stderr), new RegExp(`^exobuild: node gone \\(${down.replaceAll('.', '\\.')}\\) does not answer: .*connection refused`, 'm'));
	assert.match(String(result.stderr), /\nhint: check that buildkitd runs there/);
	assert.equal(fs.readFileSync(path.join(config, 'exobuild', 'nodes.json'), 'utf8'), before);
});

/** A loopback listener that accepts connections and never says a word (a hung node). */
const silentListener = async (): Promise<{address: string; close: () => Promise<void>}> => {
	const sockets = new Set<net.Socket>();
	const server = net.createServer(socket => {
		sockets.add(socket);
		socket.on('error', () => undefined);
	});
	await new Promise<void>(resolve => {
		server.listen(0, '127.0.0.1', resolve);
	});
	return {
		address: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
		async close() {
			for (const socket of sockets) {
				socket.destroy();
			}

			await new Promise(resolve => {
				server.close(resolve);
			});
		},
	};
};

test('a node that accepts and never answers: add fails exit 2 within the bounded time; Ctrl-C during inspect exits 130 and leaves nothing', {skip}, async () => {
	const {client} = node!;
	const silent = await silentListener();
	try {
		const tls = ['--tls-ca', client.ca, '--tls-cert', client.cert, '--tls-key', client.key];
		const started = Date.now();
		const added = await exobuild(['node', 'add', 'hung', silent.address, ...tls], {env});
		assert.equal(added.exitCode, 2, added.all);
		assert.match(String(added.stderr), new RegExp(`^exobuild: node hung \\(${silent.address.replaceAll('.', '\\.')}\\) does not answer: no answer within 15 s$`, 'm'));
		// One question (15 s), not two: the agent's query stops at the first that fails.
		assert.ok(Date.now() - started < 29_000, `bounded: ${Date.now() - started} ms`);

		assert.equal((await exobuild(['node', 'add', 'hung', silent.address, '--platform', 's390x', ...tls], {env})).exitCode, 0);
		const inspecting = exobuild(['node', 'inspect', 'hung'], {env});
		await new Promise(resolve => setTimeout(resolve, 2500));
		inspecting.kill('SIGINT');
		const interrupted = await inspecting;
		assert.equal(interrupted.exitCode, 130, interrupted.all);
		assert.match(String(interrupted.stderr), /^exobuild: node inspect interrupted by SIGINT$/m);
		// The probe's sandbox is gone; only the test node itself still runs (stopped in `after`).
		const ofTestNode = (line: string): boolean => line.includes('exobuild-remote-buildkitd-') || line.includes(' /node/bin/buildkitd ');
		let left = await leftovers();
		for (let attempt = 0; attempt < 50 && (left.processes.some(line => !ofTestNode(line)) || left.mounts.length > 0 || left.runs.length > 0); attempt++) {
			await new Promise(resolve => setTimeout(resolve, 100));
			left = await leftovers();
		}

		assert.deepEqual({...left, processes: left.processes.filter(line => !ofTestNode(line))}, {processes: [], mounts: [], runs: []});
		assert.ok(left.processes.some(line => /\/node\/bin\/buildkitd /.test(line)), 'the check sees the test node\'s own buildkitd (so it would see the probe\'s processes)');
		assert.equal((await exobuild(['node', 'rm', 'hung'], {env})).exitCode, 0);
	} finally {
		await silent.close();
	}
});

test('node rm removes the node; the records stay valid and private', {skip}, async () => {
	const removed = await exobuild(['node', 'rm', 'z15'], {env});
	assert.equal(removed.exitCode, 0, removed.all);
	assert.deepEqual(nodesJson(), {version: 1, nodes: []});
	assertPrivateRecords();
	const again = await exobuild(['node', 'rm', 'z15'], {env});
	assert.equal(again.exitCode, 2);
	assert.match(String(again.stderr), /^exobuild: no node named "z15"\nhint: there are no nodes/);
	assert.deepEqual(fs.readdirSync(path.join(config, 'exobuild')), ['nodes.json'], 'no temp file or lock left');
});
