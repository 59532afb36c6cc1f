import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {execa} from 'execa';

// The tool tarballs of the environment (test/run.sh exports them for the e2e suite) must not steer these tests.
for (const name of ['EXOBUILD_BUILDKIT', 'EXOBUILD_BUILDKIT_SHA256', 'EXOBUILD_BINFMT', 'EXOBUILD_BINFMT_SHA256']) {
	delete process.env[name];
}

const bin = fileURLToPath(new URL('../../../bin/exobuild', import.meta.url));
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-cli-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));
fs.writeFileSync(path.join(root, 'Dockerfile'), 'FROM scratch\n');

const run = async (...args: string[]) => execa(bin, args, {cwd: root, reject: false, env: {EXOBUILD_CACHE_DIR: path.join(root, 'cache')}});

const assertUsageError = (result: {exitCode?: number; stderr: string; stdout: string}, pattern: RegExp): void => {
	assert.equal(result.exitCode, 2, result.stderr);
	const lines = result.stderr.trim().split('\n');
	assert.equal(lines.length, 2, `cause + hint only:\n${result.stderr}`);
	assert.match(lines[0]!, /^exobuild: /);
	assert.match(lines[0]!, pattern);
	assert.match(lines[1]!, /^hint: /);
	assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
	assert.equal(result.stdout, '');
};

test('unknown platform: one line, a hint naming the supported ones, exit 2, nothing started', async () => {
	const result = await run('build', '--platform', 'linux/mips64', '.');
	assertUsageError(result, /unknown platform "linux\/mips64"/);
	assert.match(result.stderr, /hint: supported platforms: linux\/amd64, .*linux\/riscv64/);
	assert.equal(fs.existsSync(path.join(root, 'cache')), false, 'no cache dir was created');
});

test('missing context, missing Dockerfile, malformed flags', async () => {
	assertUsageError(await run('build', 'nowhere'), /build context .*nowhere does not exist/);
	assertUsageError(await run('build', '-f', 'Nofile', '.'), /Dockerfile .*Nofile not found/);
	assertUsageError(await run('build', '--bogus', '.'), /unknown option '--bogus'/);
	assertUsageError(await run('build', '--output', 'type=oci', '.'), /needs dest/);
	assertUsageError(await run('build', '--build-arg', '=x', '.'), /--build-arg/);
	assertUsageError(await run('build', '--platform'), /argument missing/);
	assertUsageError(await execa(bin, ['build', '-f', '-', '.'], {cwd: root, reject: false, input: '  \n', env: {EXOBUILD_CACHE_DIR: path.join(root, 'cache')}}), /-f -: stdin held no Dockerfile/);
	assertUsageError(await run('frobnicate'), /unknown command 'frobnicate'/);
});

test('--debug adds the stack trace', async () => {
	const result = await run('--debug', 'build', '--platform', 'linux/mips64', '.');
	assert.equal(result.exitCode, 2);
	assert.match(result.stderr, /\n\s+at /);
});

test('--help and --version exit 0', async () => {
	const help = await run('build', '--help');
	assert.equal(help.exitCode, 0);
	assert.match(help.stdout, /--platform <P>/);
	const version = await run('--version');
	assert.equal(version.exitCode, 0);
	assert.match(version.stdout, /^\d+\.\d+\.\d+$/m);
});

test('node: bad names, addresses and TLS options are one line and a hint (exit 2), and nothing is stored', async () => {
	const config = path.join(root, 'node-config');
	const node = async (...args: string[]) => execa(bin, ['node', ...args], {cwd: root, reject: false, env: {EXOBUILD_CACHE_DIR: path.join(root, 'cache'), XDG_CONFIG_HOME: config}});
	const pem = path.join(root, 'some.pem');
	fs.writeFileSync(pem, 'not checked until a connection\n');
	const tls = ['--tls-ca', pem, '--tls-cert', pem, '--tls-key', pem];
	assertUsageError(await node('add', '9z', 'unix:///run/b.sock', '--platform', 's390x'), /invalid node name "9z"/);
	assertUsageError(await node('add', 'z', 'http://127.0.0.1:1234', '--platform', 's390x'), /buildctl does not connect to http:\/\//);
	assertUsageError(await node('add', 'z', 'tcp://127.0.0.1:1234', '--platform', 's390x'), /a tcp:\/\/ node needs mTLS/);
	assertUsageError(await node('add', 'z', 'tcp://127.0.0.1:1234', '--platform', 's390x', '--tls-ca', pem), /go together/);
	assertUsageError(await node('add', 'z', 'tcp://127.0.0.1:1234', '--platform', 's390x', '--tls-ca', pem, '--tls-cert', pem, '--tls-key', path.join(root, 'gone.pem')), /--tls-key .*gone\.pem: no such file/);
	assertUsageError(await node('add', 'z', 'tcp://127.0.0.1:1234', '--platform', 's390x', '--tls-ca', root, '--tls-cert', pem, '--tls-key', pem), /--tls-ca .* is not a regular file/);
	assertUsageError(await node('add', 'z', 'unix:///run/b.sock', '--platform', 's390x', ...tls), /--tls-\* options go with a tcp:\/\/ address/);
	assertUsageError(await node('add', 'z', 'unix:///run/b.sock', '--platform', 'linux/mips64'), /unknown platform "linux\/mips64"/);
	// Without --platform the node must be asked, which needs a builder image with buildctl: none in this cache.
	assertUsageError(await node('add', 'z', 'tcp://127.0.0.1:1234', ...tls), /cannot ask node z \(tcp:\/\/127\.0\.0\.1:1234\): there is no current builder image/);
	assertUsageError(await node('inspect', 'z'), /no node named "z"/);
	assertUsageError(await node('rm', 'z'), /no node named "z"/);
	assert.equal(fs.existsSync(path.join(config, 'exobuild', 'nodes.json')), false, 'nothing was stored');

	const added = await node('add', 'z', 'tcp://127.0.0.1:1234', '--platform', 's390x,linux/ppc64le', ...tls);
	assert.equal(added.exitCode, 0, added.stderr);
	assert.equal(added.stdout, 'added node z (tcp://127.0.0.1:1234): linux/s390x, linux/ppc64le (given with --platform)');
	const stored = JSON.parse(fs.readFileSync(path.join(config, 'exobuild', 'nodes.json'), 'utf8')) as {nodes: Array<{tls: unknown; platforms: unknown}>};
	assert.deepEqual(stored.nodes[0]!.tls, {ca: pem, cert: pem, key: pem});
	assert.deepEqual(stored.nodes[0]!.platforms, ['linux/s390x', 'linux/ppc64le']);
	assertUsageError(await node('add', 'Z', 'unix:///run/b.sock', '--platform', 's390x'), /a node named "z" exists already/);
	fs.writeFileSync(path.join(config, 'exobuild', 'nodes.json'), '{"version":1,"nodes":[{"name":"z"}]}');
	assertUsageError(await node('ls'), /nodes\.json is not a valid node list \(nodes\.0\.address/);
});
