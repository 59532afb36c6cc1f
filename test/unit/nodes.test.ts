/**
 * The node records (src/nodes/store.ts) and the buildctl address grammar (src/nodes/address.ts),
 * and reading what a node answered (src/nodes/probe.ts): pure functions and a temp
 * XDG_CONFIG_HOME; no sandbox.
 */
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {parseNodeAddress, parseNodeName} from '../../src/nodes/address.js';
import {buildctlArgv, probeAgentArgs, probeMounts, readProbe, workerPlatforms} from '../../src/nodes/probe.js';
import {configDir, nodesFile, readNodes, updateNodes, writeNodes, type NodeRecord, type NodesDocument} from '../../src/nodes/store.js';
import {UserError} from '../../src/errors.js';
import {parseAgentLine} from '../../src/agent/contract.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-nodes-unit-'));
after(() => fs.rmSync(work, {recursive: true, force: true}));
let counter = 0;
const freshEnv = (): NodeJS.ProcessEnv => ({XDG_CONFIG_HOME: path.join(work, `config-${counter++}`)});

const refused = (run: () => unknown, message: RegExp): void => {
	assert.throws(run, (error: unknown) => error instanceof UserError && error.exitCode === 2 && message.test(error.message) && Boolean(error.hint));
};

test('addresses: every scheme buildctl --addr takes, normalised', () => {
	const cases: Array<[string, string]> = [
		['tcp://127.0.0.1:1234', 'tcp://127.0.0.1:1234'],
		['TCP://buildkit.example.com:1234/', 'tcp://buildkit.example.com:1234'],
		['tcp://[::1]:443', 'tcp://[::1]:443'],
		['unix:///run/buildkit/buildkitd.sock', 'unix:///run/buildkit/buildkitd.sock'],
		['ssh://builder@z15.example.com', 'ssh://builder@z15.example.com'],
		['ssh://builder@10.0.0.5:2222', 'ssh://builder@10.0.0.5:2222'],
		['ssh://power9', 'ssh://power9'],
		['ssh://me@host/run/user/1000/buildkit/buildkitd.sock', 'ssh://me@host/run/user/1000/buildkit/buildkitd.sock'],
		['kube-pod://buildkitd-s390x-0?namespace=build&context=prod', 'kube-pod://buildkitd-s390x-0?namespace=build&context=prod'],
		['kube-pod://buildkitd-0', 'kube-pod://buildkitd-0'],
		['docker-container://buildx_buildkit_z0', 'docker-container://buildx_buildkit_z0'],
		['podman-container://buildkitd', 'podman-container://buildkitd'],
	];
	for (const [input, normalised] of cases) {
		assert.equal(parseNodeAddress(input).address, normalised, input);
	}

	assert.equal(parseNodeAddress('kube-pod://p').scheme, 'kube-pod');
});

test('addresses: anything else is refused with one line and a hint (exit 2)', () => {
	refused(() => parseNodeAddress('https://example.com:443'), /buildctl does not connect to https:\/\//);
	refused(() => parseNodeAddress('npipe:////./pipe/buildkitd'), /does not connect to npipe/);
	refused(() => parseNodeAddress('127.0.0.1:1234'), /no scheme/);
	refused(() => parseNodeAddress('tcp://127.0.0.1'), /needs a port/);
	refused(() => parseNodeAddress('tcp://127.0.0.1:0'), /port "0"/);
	refused(() => parseNodeAddress('tcp://127.0.0.1:70000'), /port "70000"/);
	refused(() => parseNodeAddress('tcp://bad_host:1234'), /is not HOST\[:PORT\]/);
	refused(() => parseNodeAddress('unix://relative.sock'), /absolute socket path/);
	refused(() => parseNodeAddress('unix:///run/../etc/x'), /absolute socket path/);
	refused(() => parseNodeAddress('ssh://user:secret@host'), /not HOST\[:PORT\]|not a user name/);
	refused(() => parseNodeAddress('ssh://user@host?x=1'), /no query/);
	refused(() => parseNodeAddress('ssh://-oProxyCommand=x@host'), /not a user name/);
	refused(() => parseNodeAddress('ssh://-oProxyCommand=x'), /not HOST/);
	refused(() => parseNodeAddress('kube-pod://pod?image=evil'), /only namespace=, context= and container=/);
	refused(() => parseNodeAddress('docker-container://'), /not a container name/);
	refused(() => parseNodeAddress('docker-container://a b'), /white space/);
	refused(() => parseNodeAddress(''), /empty/);
});

test('names: buildx\'s grammar (a letter, then letters, digits, . _ -), lower-cased', () => {
	assert.equal(parseNodeName('Z15'), 'z15');
	assert.equal(parseNodeName('power9.lab_1-a'), 'power9.lab_1-a');
	for (const bad of ['', '9z', '-z', 'z/15', 'z 15', '.z', 'a'.repeat(64), 'z15\n']) {
		refused(() => parseNodeName(bad), /invalid node name/);
	}
});

const record = (overrides: Partial<NodeRecord> = {}): NodeRecord => ({
	name: 'z15', address: 'tcp://127.0.0.1:1234', platforms: ['linux/s390x'], platformsFrom: 'node',
	tls: {ca: '/etc/exobuild/ca.pem', cert: '/etc/exobuild/cert.pem', key: '/etc/exobuild/key.pem'}, added: new Date(0).toISOString(), ...overrides,
});

test('store: no file is no nodes; a write is read back, 0600 in a 0700 folder, with no temp file left', async () => {
	const env = freshEnv();
	assert.equal(configDir(env), path.join(env['XDG_CONFIG_HOME']!, 'exobuild'));
	assert.deepEqual(await readNodes(env), {version: 1, nodes: []});
	const document: NodesDocument = {version: 1, nodes: [record(), record({name: 'p9', address: 'ssh://build@p9', platforms: ['linux/ppc64le'], platformsFrom: 'flag', tls: undefined})]};
	delete (document.nodes[1] as {tls?: unknown}).tls;
	await writeNodes(document, env);
	assert.deepEqual(await readNodes(env), document);
	assert.equal(fs.statSync(nodesFile(env)).mode & 0o777, 0o600);
	assert.equal(fs.statSync(configDir(env)).mode & 0o777, 0o700);
	assert.deepEqual(fs.readdirSync(configDir(env)), ['nodes.json']);
	const added = await updateNodes(current => ({document: {...current, nodes: current.nodes.filter(node => node.name !== 'p9')}, value: 'done'}), env);
	assert.equal(added, 'done');
	assert.deepEqual((await readNodes(env)).nodes.map(node => node.name), ['z15']);
	assert.deepEqual(fs.readdirSync(configDir(env)), ['nodes.json'], 'the lock is gone');
});

test('store: invalid records are never written', async () => {
	const env = freshEnv();
	const invalid: NodeRecord[] = [
		record({name: 'Z15'}),
		record({address: 'tcp://127.0.0.1'}),
		record({platforms: ['linux/mips64']}),
		record({platforms: ['s390x']}),
		record({platforms: []}),
		record({tls: undefined}),
		record({address: 'unix:///run/b.sock'}),
		record({tls: {ca: 'relative.pem', cert: '/c', key: '/k'}}),
	];
	for (const node of invalid) {
		if (node.tls === undefined) {
			delete (node as {tls?: unknown}).tls;
		}

		await assert.rejects(writeNodes({version: 1, nodes: [node]}, env), JSON.stringify(node));
	}

	await assert.rejects(writeNodes({version: 1, nodes: [record(), record()]}, env), /appears twice/);
	assert.equal(fs.existsSync(nodesFile(env)), false);
});

test('store: a nodes.json that is a symlink, not a regular file, too big or not valid is refused with one line and a hint', async () => {
	const target = path.join(work, 'elsewhere.json');
	fs.writeFileSync(target, JSON.stringify({version: 1, nodes: []}));
	const cases: Array<[string, (file: string) => void, RegExp]> = [
		['symlink', file => fs.symlinkSync(target, file), /is a symbolic link/],
		['folder', file => fs.mkdirSync(file), /is not a regular file/],
		['fifo', file => execFileSync('mkfifo', [file]), /is not a regular file/],
		['empty', file => fs.writeFileSync(file, ''), /is not valid JSON/],
		['json', file => fs.writeFileSync(file, '{"version":1,'), /is not valid JSON/],
		['schema', file => fs.writeFileSync(file, JSON.stringify({version: 1, nodes: [{...record(), address: 'ftp://x'}]})), /is not a valid node list \(nodes\.0\.address/],
		['version', file => fs.writeFileSync(file, JSON.stringify({version: 2, nodes: []})), /is not a valid node list \(version/],
		['size', file => fs.writeFileSync(file, ' '.repeat(1024 * 1024 + 1)), /more than exobuild's node records ever are/],
	];
	for (const [what, make, message] of cases) {
		const env = freshEnv();
		fs.mkdirSync(configDir(env), {recursive: true, mode: 0o700});
		make(nodesFile(env));
		await assert.rejects(readNodes(env), (error: unknown) => error instanceof UserError && error.exitCode === 2 && message.test(error.message) && /move that file away/.test(error.hint ?? ''), what);
		// A write never replaces a link or a folder, and never writes through one.
		if (what === 'symlink' || what === 'folder' || what === 'fifo') {
			await assert.rejects(writeNodes({version: 1, nodes: [record()]}, env), /symbolic link|not a regular file/, what);
		}
	}

	assert.equal(fs.readFileSync(target, 'utf8'), JSON.stringify({version: 1, nodes: []}), 'the link\'s target is untouched');
	const linked = freshEnv();
	fs.mkdirSync(linked['XDG_CONFIG_HOME']!, {recursive: true});
	fs.symlinkSync(work, configDir(linked));
	await assert.rejects(readNodes(linked), /is a symbolic link, not exobuild's config folder/);
	await assert.rejects(writeNodes({version: 1, nodes: []}, linked), /is a symbolic link/);
});

test('probe: buildctl\'s argv with the TLS files mounted read-only, and the agent\'s query argv', () => {
	const tcp = {name: 'z15', address: 'tcp://127.0.0.1:1234', tls: {ca: '/h/ca.pem', cert: '/h/c.pem', key: '/h/k.pem', serverName: 'z15.example.com'}};
	assert.deepEqual(buildctlArgv(tcp), [
		'buildctl', '--addr', 'tcp://127.0.0.1:1234', '--timeout', '5',
		'--tlscacert', '/exobuild/node-tls/ca.pem', '--tlscert', '/exobuild/node-tls/cert.pem', '--tlskey', '/exobuild/node-tls/key.pem', '--tlsservername', 'z15.example.com',
	]);
	assert.deepEqual(probeMounts(tcp).map(mount => [mount.hostPath, mount.sandboxPath, mount.readOnly]), [
		['/h/ca.pem', '/exobuild/node-tls/ca.pem', true], ['/h/c.pem', '/exobuild/node-tls/cert.pem', true], ['/h/k.pem', '/exobuild/node-tls/key.pem', true],
	]);
	const unix = {name: 'local', address: 'unix:///run/buildkit/buildkitd.sock'};
	assert.deepEqual(probeMounts(unix), []);
	assert.deepEqual(probeAgentArgs(unix), [
		'query', '--timeout', '15',
		'9', 'buildctl', '--addr', 'unix:///run/buildkit/buildkitd.sock', '--timeout', '5', 'debug', 'workers', '--format', '{{json .}}',
		'9', 'buildctl', '--addr', 'unix:///run/buildkit/buildkitd.sock', '--timeout', '5', 'debug', 'info', '--format', '{{json .}}',
	]);
});

const query = (index: number, exitCode: number, output: string) => {
	const event = parseAgentLine(JSON.stringify({v: 1, event: 'query', index, exitCode, output}));
	assert.equal(event.event, 'query');
	return event as Extract<typeof event, {event: 'query'}>;
};

test('probe: what the node answered, or why it did not', () => {
	// As buildctl v0.32.2 prints them (lower-case keys): configured platforms first, then what it can emulate.
	const workers = JSON.stringify([
		{id: 'abc', labels: {}, platforms: [{architecture: 's390x', os: 'linux'}, {architecture: 'amd64', os: 'linux'}, {architecture: 'amd64', os: 'linux', variant: 'v2'}, {architecture: 'arm', os: 'linux', variant: 'v7'}, {architecture: 's390x', os: 'linux'}]},
		{id: 'def', labels: {}, platforms: [{architecture: 'mips64', os: 'linux'}, {architecture: '386', os: 'linux'}]},
	]);
	assert.deepEqual(workerPlatforms(workers), {native: ['linux/s390x', 'linux/mips64'], all: ['linux/s390x', 'linux/amd64', 'linux/amd64/v2', 'linux/arm/v7', 'linux/mips64', 'linux/386']});
	const info = JSON.stringify({buildkitVersion: {package: 'github.com/moby/buildkit', version: 'v0.32.2', revision: '', dockerfileVersion: '1.26.0'}});
	assert.deepEqual(readProbe(query(0, 0, workers), query(1, 0, info)), {
		answered: true, version: 'v0.32.2', nativePlatforms: ['linux/s390x', 'linux/mips64'], workerPlatforms: ['linux/s390x', 'linux/amd64', 'linux/amd64/v2', 'linux/arm/v7', 'linux/mips64', 'linux/386'],
	});
	assert.match((readProbe(query(0, 0, workers), query(1, 0, '{"BuildkitVersion":{"Version":"v1"}}')) as {reason: string}).reason, /^its answer is not what buildctl prints \(buildkitVersion: .*\)$/);
	assert.deepEqual(readProbe(query(0, 1, 'time="x" level=debug\nerror: failed to list workers: Unavailable: connection refused\n'), query(1, 0, info)), {answered: false, reason: 'error: failed to list workers: Unavailable: connection refused'});
	assert.deepEqual(readProbe(query(0, 124, ''), undefined), {answered: false, reason: 'no answer within 15 s'});
	assert.deepEqual(readProbe(query(0, 0, workers), undefined), {answered: false, reason: 'the agent ended before it asked'});
	assert.equal(readProbe(query(0, 0, 'not json'), query(1, 0, info)).answered, false);
	assert.throws(() => parseAgentLine(JSON.stringify({v: 1, event: 'query', index: -1, exitCode: 0, output: ''})));
});
