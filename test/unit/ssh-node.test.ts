/**
 * ssh:// nodes without a real sshd: what the node's sandbox mounts (the known_hosts file and the
 * host's ssh-agent socket, never a key), the checks made before any sandbox (a live agent socket,
 * a known_hosts file), the ssh options the builder image carries (their paths must be the mounts'),
 * the node record's field, and `node add` refusing the schemes whose helper needs a host CLI.
 */
import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {UserError} from '../../src/errors.js';
import {agentLayerFiles, builderPackages} from '../../src/builder-image/recipe.js';
import {checkSshNode, probeMounts, sandboxSsh, sshAgentSocket} from '../../src/nodes/probe.js';
import {nodeRecordSchema} from '../../src/nodes/store.js';
import {nodeTarget} from '../../src/pipeline/routing.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-ssh-node-unit-'));
after(() => fs.rmSync(work, {recursive: true, force: true}));
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

const knownHosts = path.join(work, 'known_hosts');
fs.writeFileSync(knownHosts, '[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample\n');
const node = {name: 's', address: 'ssh://me@127.0.0.1:2222', sshKnownHosts: knownHosts};

const isUsageError = (message: RegExp) => (error: unknown): boolean => error instanceof UserError && error.exitCode === 2 && message.test(error.message) && /ssh-agent/.test(error.hint ?? '');

test('ssh node: the sandbox mounts known_hosts and the agent socket read-only at the paths ssh is told', () => {
	assert.deepEqual(probeMounts(node, {SSH_AUTH_SOCK: '/run/user/1000/agent.sock'}).map(mount => [mount.hostPath, mount.sandboxPath, mount.readOnly]), [
		[knownHosts, '/exobuild/node-ssh/known_hosts', true], ['/run/user/1000/agent.sock', '/exobuild/node-ssh/agent.sock', true],
	]);
	assert.throws(() => probeMounts(node, {}), isUsageError(/is reached over ssh, but SSH_AUTH_SOCK is not set/));
	assert.throws(() => sshAgentSocket(node, {SSH_AUTH_SOCK: 'relative.sock'}), isUsageError(/not an absolute path/));
	assert.deepEqual(probeMounts({name: 'u', address: 'unix:///run/buildkit/buildkitd.sock'}, {}), [], 'only ssh:// nodes need an agent');
});

test('ssh node: no live agent or no known_hosts is refused before any sandbox', async () => {
	await assert.rejects(checkSshNode(node, {}), isUsageError(/SSH_AUTH_SOCK is not set/));
	await assert.rejects(checkSshNode(node, {SSH_AUTH_SOCK: path.join(work, 'dead.sock')}), isUsageError(/SSH_AUTH_SOCK \(.*dead\.sock\) is gone: no ssh-agent runs/));
	await assert.rejects(checkSshNode(node, {SSH_AUTH_SOCK: knownHosts}), isUsageError(/is not a socket/));
	const socket = path.join(work, 'agent.sock');
	const server = net.createServer();
	await new Promise<void>(resolve => server.listen(socket, resolve));
	try {
		await checkSshNode(node, {SSH_AUTH_SOCK: socket});
		await assert.rejects(checkSshNode({...node, sshKnownHosts: path.join(work, 'missing')}, {SSH_AUTH_SOCK: socket}), (error: unknown) => error instanceof UserError && /known_hosts file .*missing is gone/.test(error.message));
	} finally {
		await new Promise(resolve => server.close(resolve));
	}

	await checkSshNode({name: 'u', address: 'unix:///x.sock'}, {});
});

test('builder image: openssh-client and ssh options that check host keys and use only the forwarded agent', () => {
	assert.ok((builderPackages as readonly string[]).includes('openssh-client'));
	const layer = agentLayerFiles.find(([source]) => source === 'node-ssh.conf');
	assert.deepEqual(layer?.slice(1), ['etc/ssh/ssh_config.d/exobuild-node.conf', 0o644]);
	const options = new Map(fs.readFileSync(path.join(repo, 'vm-image', 'node-ssh.conf'), 'utf8').split('\n')
		.map(line => line.trim()).filter(line => line !== '' && !line.startsWith('#')).map(line => line.split(/\s+/, 2) as [string, string]));
	assert.equal(options.get('UserKnownHostsFile'), sandboxSsh.knownHosts);
	assert.equal(options.get('IdentityAgent'), sandboxSsh.agent);
	assert.equal(options.get('StrictHostKeyChecking'), 'yes');
	assert.equal(options.get('BatchMode'), 'yes');
	assert.equal(options.get('ForwardAgent'), 'no');
	const containerfile = fs.readFileSync(path.join(repo, 'Containerfile.builder'), 'utf8');
	assert.match(containerfile, /apt-get install[^\n]*\n[^\n]*openssh-client/);
	assert.match(containerfile, /COPY vm-image\/node-ssh\.conf \/etc\/ssh\/ssh_config\.d\/exobuild-node\.conf/);
});

test('node record: known_hosts only with ssh://, and it reaches the node target', () => {
	const record = {name: 's', address: 'ssh://me@127.0.0.1:2222', platforms: ['linux/s390x'], platformsFrom: 'node', sshKnownHosts: knownHosts, added: new Date(0).toISOString()};
	assert.equal(nodeTarget(nodeRecordSchema.parse(record)).sshKnownHosts, knownHosts);
	assert.equal(nodeRecordSchema.safeParse({...record, address: 'unix:///x.sock'}).success, false);
	assert.equal(nodeRecordSchema.safeParse({...record, sshKnownHosts: 'relative'}).success, false);
});

const cli = (args: string[], env: NodeJS.ProcessEnv) => spawnSync(process.execPath, [path.join(repo, 'bin', 'exobuild'), ...args], {encoding: 'utf8', env: {...process.env, ...env}});

test('node add: kube-pod://, docker-container:// and podman-container:// are refused (exit 2) with a hint, nothing stored', () => {
	const env = {XDG_CONFIG_HOME: path.join(work, 'config'), HOME: work};
	for (const [address, cliName] of [['kube-pod://buildkitd-0?namespace=build', 'kubectl'], ['docker-container://buildx_buildkit_z0', 'docker'], ['podman-container://buildkitd', 'podman']] as const) {
		const result = cli(['node', 'add', 'z', address, '--platform', 'linux/s390x'], env);
		assert.equal(result.status, 2, result.stderr);
		assert.match(result.stderr, new RegExp(`nodes are not supported: buildctl would run ${cliName} inside exobuild's sandbox`));
		assert.match(result.stderr, /tcp:\/\/HOST:PORT/);
		assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
	}

	assert.equal(fs.existsSync(path.join(work, 'config', 'exobuild', 'nodes.json')), false);
	const missing = cli(['node', 'add', 's', 'ssh://me@127.0.0.1:2222', '--platform', 'linux/s390x'], {...env, HOME: path.join(work, 'nohome')});
	assert.equal(missing.status, 2, missing.stderr);
	assert.match(missing.stderr, /known_hosts file .*nohome\/\.ssh\/known_hosts does not exist/);
	const added = cli(['node', 'add', 's', 'ssh://me@127.0.0.1:2222', '--platform', 'linux/s390x', '--ssh-known-hosts', knownHosts], env);
	assert.equal(added.status, 0, added.stderr);
	const stored = JSON.parse(fs.readFileSync(path.join(work, 'config', 'exobuild', 'nodes.json'), 'utf8')) as {nodes: Array<{sshKnownHosts?: string}>};
	assert.equal(stored.nodes[0]?.sshKnownHosts, knownHosts);
	const wrong = cli(['node', 'add', 't', 'unix:///run/b.sock', '--platform', 'linux/s390x', '--ssh-known-hosts', knownHosts], env);
	assert.equal(wrong.status, 2);
	assert.match(wrong.stderr, /--ssh-known-hosts goes with an ssh:\/\/ address/);
});

test('ssh node: a failed connection is reported with ssh\'s own last words, not its banner', async () => {
	const {sshCause} = await import('../../src/nodes/probe.js');
	// As buildctl v0.32.2 printed it for a known_hosts holding another key (seen in test/e2e/ssh-node.test.ts).
	const line = String.raw`error: failed to list workers: Unavailable: connection error: desc = "error reading server preface: command [ssh -l u -p 35915 -- 127.0.0.1 buildctl dial-stdio] has exited with exit status 255, make sure the URL is valid, and Docker 18.09 or later is installed on the remote host: stderr=@@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n@@@@@@@@\r\nIT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\nHost key for [127.0.0.1]:35915 has changed and you have requested strict checking.\r\nHost key verification failed.\r\n"`;
	assert.equal(sshCause(line), 'ssh -l u -p 35915 -- 127.0.0.1 buildctl dial-stdio exited with 255: Host key for [127.0.0.1]:35915 has changed and you have requested strict checking. Host key verification failed.');
	assert.equal(sshCause('error: failed to list workers: Unavailable: connection refused'), undefined);
});
