/**
 * An ssh:// node end to end: the remote-buildkitd fixture (reporting linux/s390x only) reached
 * through a real sshd from Debian's openssh-server (test/fixtures/sshd.ts: unprivileged, on
 * 127.0.0.1:PORT, its one key restricted to `buildctl --addr unix://SOCKET dial-stdio`). buildctl
 * in exobuild's sandbox runs the builder image's ssh, which signs with the host's ssh-agent
 * (forwarded as a socket, no key copied) and checks the host key against the known_hosts given.
 * `node add` without --platform learns linux/s390x over ssh; a routed build gives one index whose
 * s390x image the node built. A wrong known_hosts: the node does not answer, with ssh's line.
 * No agent: one line before any sandbox. Nothing is left running.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {execa} from 'execa';
import {inspectArchive} from '../../src/oci/index.js';
import {parsePlatform} from '../../src/platforms/parse.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {startRemoteBuildkitd, type RemoteBuildkitd} from '../fixtures/remote-buildkitd.js';
import {sshdBinary, startSshd, type TestSshd} from '../fixtures/sshd.js';
import {extractUpstream, upstreamSkip} from '../fixtures/upstream.js';
import {assertNothingLeft, exobuild, exobuildEnv, failure, fixturesDir, makeContext, testCacheDir} from './helpers.js';

let skip: string | undefined = upstreamSkip('buildkit');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-ssh-node-'));
fs.chmodSync(work, 0o755);
const config = path.join(work, 'config');
let node: RemoteBuildkitd | undefined;
let sshd: TestSshd | undefined;
let busybox: string;
let buildctl: string;
let env: Record<string, string>;

before(async () => {
	if (skip !== undefined) {
		return;
	}

	const binary = await sshdBinary(path.join(testCacheDir, 'fixtures'));
	if ('skip' in binary) {
		skip = binary.skip;
		return;
	}

	Object.assign(process.env, exobuildEnv);
	busybox = await busyboxLayout(['linux/ppc64le', 'linux/s390x'], path.join(fixturesDir, 'busybox'));
	node = await startRemoteBuildkitd(parsePlatform('linux/s390x'));
	buildctl = path.join(await extractUpstream('buildkit', path.join(work, 'upstream')), 'buildctl');
	sshd = await startSshd(binary, buildctl, node.socket);
	env = {XDG_CONFIG_HOME: config, SSH_AUTH_SOCK: sshd.agentSocket};
});

after(async () => {
	const pids = sshd?.pids() ?? [];
	await sshd?.stop();
	await node?.stop();
	fs.rmSync(work, {recursive: true, force: true});
	await assertNothingLeft();
	assert.ok(pids.length >= 2, `the agent and sshd were running: ${pids.join(' ')}`);
	assert.deepEqual(pids.filter(pid => fs.existsSync(`/proc/${pid}`)), [], 'the agent and sshd are gone');
});

test('ssh:// node: node add learns linux/s390x over ssh; a routed build\'s s390x image is the node\'s', async context => {
	if (skip !== undefined) {
		context.skip(skip);
		return;
	}

	const added = await exobuild(['node', 'add', 's', sshd!.address, '--ssh-known-hosts', sshd!.knownHosts], {env});
	assert.equal(added.exitCode, 0, `${failure(added)}\nsshd: ${sshd!.log().slice(-2000)}`);
	assert.match(String(added.stdout), /^added node s \(ssh:\/\/exobuild-ssh-test@127\.0\.0\.1:\d+\): linux\/s390x \(reported by the node/m);
	const inspect = await exobuild(['node', 'inspect', 's'], {env});
	assert.equal(inspect.exitCode, 0, failure(inspect));
	assert.match(String(inspect.stdout), /Status: +answered/);
	assert.match(String(inspect.stdout), /BuildKit: +v0\.32\.2/);
	assert.match(String(inspect.stdout), new RegExp(`SSH: +known_hosts ${sshd!.knownHosts.replaceAll('.', '\\.')}`));

	const nonce = crypto.randomBytes(8).toString('hex');
	const dest = path.join(work, 'ssh.oci.tar');
	const result = await exobuild([
		'build', '--progress', 'plain', '--platform', 'linux/ppc64le,linux/s390x', '--build-context', `busybox=oci-layout://${busybox}`,
		'--output', `type=oci,dest=${dest}`,
		makeContext(path.join(work, 'ctx'), {Dockerfile: `FROM busybox\nRUN uname -m > /uname.txt && echo ${nonce} > /nonce.txt\n`}),
	], {env});
	assert.equal(result.exitCode, 0, `${failure(result, 40)}\nsshd: ${sshd!.log().slice(-2000)}\nnode: ${node!.log().slice(-2000)}`);
	const archive = await inspectArchive(dest);
	assert.deepEqual(archive.images.map(image => image.platform), ['linux/ppc64le', 'linux/s390x']);
	for (const image of archive.images) {
		assert.equal((await image.readFile('/uname.txt'))?.toString().trim(), image.platform === 'linux/s390x' ? 's390x' : 'ppc64le');
		assert.equal((await image.readFile('/nonce.txt'))?.toString().trim(), nonce);
	}

	assert.match(String(result.stderr), /\[linux\/s390x @s[ \]].*RUN uname -m/);
	// The node's own records (over its unix socket, from the host) hold this run's RUN.
	const du = await execa(buildctl, ['--addr', `unix://${node!.socket}`, 'du', '--verbose']);
	assert.ok(du.stdout.split('\n').some(line => line.startsWith('Description:') && line.includes(`echo ${nonce}`)), `the node ran the RUN with ${nonce}`);
	// sshd saw the test key's sessions (its log names the accepted key).
	assert.match(sshd!.log(), /Accepted publickey for exobuild-ssh-test from 127\.0\.0\.1/);
});

test('ssh:// node: a known_hosts with another key: not answering, with ssh\'s host key line; no agent: refused before any sandbox', async context => {
	if (skip !== undefined) {
		context.skip(skip);
		return;
	}

	const wrong = await exobuild(['node', 'add', 'w', sshd!.address, '--ssh-known-hosts', sshd!.wrongKnownHosts], {env});
	assert.equal(wrong.exitCode, 2, failure(wrong));
	assert.match(String(wrong.stderr), /node w \(ssh:\/\/exobuild-ssh-test@127\.0\.0\.1:\d+\) does not answer: ssh .* exited with 255: Host key for \[127\.0\.0\.1\]:\d+ has changed and you have requested strict checking\. Host key verification failed\.$/m, String(wrong.stderr));
	assert.match(String(wrong.stderr), /hint: check that `ssh ssh:\/\//);

	const noAgent = await exobuild(['node', 'inspect', 's'], {env: {XDG_CONFIG_HOME: config, SSH_AUTH_SOCK: path.join(work, 'no-agent.sock')}});
	assert.equal(noAgent.exitCode, 2, failure(noAgent));
	assert.match(String(noAgent.stderr), /node s \(ssh:\/\/.*\) is reached over ssh, but SSH_AUTH_SOCK \(.*no-agent\.sock\) is gone: no ssh-agent runs/);
	assert.match(String(noAgent.stderr), /hint: start an ssh-agent/);
});
