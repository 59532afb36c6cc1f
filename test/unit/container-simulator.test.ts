/**
 * The Apple `container` CLI simulator (test/simulators/apple-container): grammar rejections,
 * system status, image load, JSON shapes, and real runs through the linux-userns sandbox.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {setTimeout as sleep} from 'node:timers/promises';
import {fileURLToPath} from 'node:url';
import {execa} from 'execa';
import * as tar from 'tar';
import {packLayoutToArchive} from '../../src/oci/index.js';
import {busyboxLayout} from '../fixtures/base-images.js';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const cli = path.join(repoRoot, 'test', 'simulators', 'apple-container', 'container');
const fixturesDir = path.join(repoRoot, '.cache', 'fixtures');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'container-sim-'));
const simRoot = path.join(root, 'state');
const canRun = process.platform === 'linux' && process.getuid?.() === 0;

/** Whether a process is running (a zombie waiting for a reaper is not). */
const running = (pid: number): boolean => {
	try {
		const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
		return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] !== 'Z';
	} catch {
		return false;
	}
};

const container = (args: readonly string[], env: Record<string, string> = {}) =>
	execa(cli, args, {reject: false, env: {CONTAINER_SIM_ROOT: simRoot, ...env}});

let image = '';
before(async () => {
	await container(['system', 'start']);
	if (canRun) {
		const layout = await busyboxLayout([`linux/${process.arch === 'x64' ? 'amd64' : process.arch}`], path.join(fixturesDir, 'busybox'));
		const copy = path.join(root, 'layout');
		fs.cpSync(layout, copy, {recursive: true});
		image = path.join(root, 'busybox.tar');
		await packLayoutToArchive(copy, image, {tags: ['busybox:latest']});
		const loaded = await container(['image', 'load', '-i', image]);
		assert.equal(loaded.exitCode, 0, loaded.stderr);
		assert.equal(loaded.stdout, 'Loaded images:\ndocker.io/library/busybox:latest');
	}
});

after(async () => {
	await container(['delete', '--all', '--force']);
	fs.rmSync(root, {recursive: true, force: true});
});

test('unknown options are usage errors (exit 64), --privileged included; --cap-add does not exist in 0.11.0', async () => {
	const privileged = await container(['run', '--privileged', 'busybox', 'true']);
	assert.equal(privileged.exitCode, 64);
	assert.match(privileged.stderr, /^Error: Unknown option '--privileged'\nUsage: container run \[<options>\] <image> \[<arguments> \.\.\.\]\n {2}See 'container run --help' for more information\.$/);
	const unknown = await container(['list', '--bogus']);
	assert.equal(unknown.exitCode, 64);
	assert.match(unknown.stderr, /Unknown option '--bogus'/);
	const old = await container(['run', '--cap-add', 'SYS_ADMIN', 'busybox'], {CONTAINER_SIM_VERSION: '0.11.0'});
	assert.equal(old.exitCode, 64);
	assert.match(old.stderr, /Unknown option '--cap-add'/);
	const calls = fs.readFileSync(path.join(simRoot, 'calls.jsonl'), 'utf8').trim().split('\n').map(line => JSON.parse(line) as {argv: string[]});
	assert.ok(calls.some(call => call.argv.join(' ') === 'run --privileged busybox true'));
});

test('system status: exit 1 with the real message when stopped, JSON when running', async () => {
	const stopped = await container(['system', 'status'], {CONTAINER_SIM_ROOT: path.join(root, 'never-started')});
	assert.equal(stopped.exitCode, 1);
	assert.equal(stopped.stdout, 'apiserver is not running and not registered with launchd');
	const list = await container(['list'], {CONTAINER_SIM_ROOT: path.join(root, 'never-started')});
	assert.equal(list.exitCode, 1);
	assert.match(list.stderr, /XPC connection error[\s\S]*container system start/);
	const running = await container(['system', 'status', '--format', 'json']);
	assert.equal(running.exitCode, 0);
	assert.deepEqual(Object.keys(JSON.parse(running.stdout) as object), ['status', 'appRoot', 'installRoot', 'logRoot', 'apiServerVersion', 'apiServerCommit', 'apiServerBuild', 'apiServerAppName']);
	assert.equal((JSON.parse(running.stdout) as {status: string}).status, 'running');
});

test('image load refuses a docker-save archive (no oci-layout), as apple/container#1103 shows', async () => {
	const dir = path.join(root, 'docker-archive');
	fs.mkdirSync(dir);
	fs.writeFileSync(path.join(dir, 'manifest.json'), '[{"Config":"c.json","RepoTags":["x:1"],"Layers":[]}]');
	const archive = path.join(root, 'docker.tar');
	await tar.c({cwd: dir, file: archive}, ['manifest.json']);
	const result = await container(['image', 'load', '-i', archive]);
	assert.equal(result.exitCode, 1);
	assert.match(result.stderr, /^Error: notFound: ".*\/oci-layout"$/);
});

test('image list/inspect and container list/inspect print the 1.x JSON shapes', {skip: !canRun}, async () => {
	const images = JSON.parse((await container(['image', 'list', '--format', 'json'])).stdout) as Array<Record<string, unknown>>;
	assert.equal(images[0]?.['name'], 'docker.io/library/busybox:latest');
	assert.deepEqual(Object.keys(images[0]!), ['id', 'name', 'creationDate', 'labels', 'configuration', 'index', 'variants']);
	const id = (await container(['run', '-d', '--name', 'shapes', '-l', 'k=v', '-c', '2', '-m', '512M', 'busybox', 'sleep', '30'])).stdout;
	assert.equal(id, 'shapes');
	const [listed] = JSON.parse((await container(['list', '--all', '--format', 'json'])).stdout) as Array<{id: string; configuration: {labels: object; resources: object}; status: {state: string}}>;
	assert.equal(listed?.id, 'shapes');
	assert.equal(listed?.status.state, 'running');
	assert.deepEqual(listed?.configuration.labels, {k: 'v'});
	assert.deepEqual(listed?.configuration.resources, {cpus: 2, memoryInBytes: 512 * 1024 * 1024});
	const [inspected] = JSON.parse((await container(['inspect', 'shapes'])).stdout) as Array<{id: string}>;
	assert.equal(inspected?.id, 'shapes');
	const old = JSON.parse((await container(['list', '--format', 'json'], {CONTAINER_SIM_VERSION: '0.11.0'})).stdout) as Array<{status: string}>;
	assert.equal(old[0]?.status, 'running');
	const stopped = await container(['stop', '-t', '1', 'shapes']);
	assert.equal(stopped.stdout, 'shapes');
	assert.equal((JSON.parse((await container(['inspect', 'shapes'])).stdout) as Array<{status: {state: string}}>)[0]?.status.state, 'stopped');
	assert.equal((await container(['delete', 'shapes'])).exitCode, 0);
});

test('run --rm prints the host machine and exits with the container\'s code', {skip: !canRun}, async () => {
	const result = await container(['run', '--rm', 'busybox', 'uname', '-m']);
	assert.equal(result.exitCode, 0, result.stderr);
	assert.equal(result.stdout, os.machine());
	const failed = await container(['run', '--rm', '-e', 'X=y', 'busybox', 'sh', '-c', 'echo "$X" >&2; exit 3']);
	assert.equal(failed.exitCode, 3);
	assert.equal(failed.stderr, 'y');
	assert.equal((await container(['list', '--all', '--quiet'])).stdout, '');
});

test('run -i gives the client\'s stdin to the container (the agent reads its env= secrets there); without -i stdin is empty', {skip: !canRun}, async () => {
	const input = 'tok\tc2VjcmV0\nsecond line\n';
	const interactive = await execa(cli, ['run', '--rm', '-i', 'busybox', 'cat'], {reject: false, input, env: {CONTAINER_SIM_ROOT: simRoot}});
	assert.equal(interactive.exitCode, 0, interactive.stderr);
	assert.equal(interactive.stdout, input.trimEnd());
	const closed = await execa(cli, ['run', '--rm', 'busybox', 'cat'], {reject: false, input, env: {CONTAINER_SIM_ROOT: simRoot}});
	assert.equal(closed.exitCode, 0, closed.stderr);
	assert.equal(closed.stdout, '');
});

test('mounting needs --cap-add SYS_ADMIN (or ALL); /proc/sys is read-only from 1.2.0 unless --read-only-path NONE', {skip: !canRun}, async () => {
	const denied = await container(['run', '--rm', 'busybox', 'mount', '-t', 'tmpfs', 'tmpfs', '/tmp']);
	assert.notEqual(denied.exitCode, 0);
	assert.match(denied.stderr, /permission denied/i);
	for (const cap of ['SYS_ADMIN', 'CAP_SYS_ADMIN', 'ALL']) {
		// eslint-disable-next-line no-await-in-loop
		const allowed = await container(['run', '--rm', '--cap-add', cap, 'busybox', 'mount', '-t', 'tmpfs', 'tmpfs', '/tmp']);
		assert.equal(allowed.exitCode, 0, `${cap}: ${allowed.stderr}`);
	}

	const write = ['busybox', 'sh', '-c', 'echo sim > /proc/sys/kernel/domainname'];
	assert.match((await container(['run', '--rm', '--cap-add', 'ALL', ...write])).stderr, /Read-only file system/);
	assert.equal((await container(['run', '--rm', '--cap-add', 'ALL', '--read-only-path', 'NONE', ...write])).exitCode, 0);
	assert.equal((await container(['run', '--rm', ...write], {CONTAINER_SIM_VERSION: '1.1.0'})).exitCode, 0);
	assert.equal((await container(['run', '--read-only-path', 'NONE', ...write], {CONTAINER_SIM_VERSION: '1.2.0'})).exitCode, 64);
	const virtualization = await container(['run', '--rm', '--virtualization', 'busybox', 'true']);
	assert.equal(virtualization.exitCode, 1);
	assert.match(virtualization.stderr, /nested virtualization is not supported on the platform/);
});

test('a SIGKILLed client leaves its container running; delete -f removes it and every process', {skip: !canRun}, async () => {
	const client = execa(cli, ['run', '--name', 'orphan', 'busybox', 'sh', '-c', 'echo up; sleep 600'], {reject: false, env: {CONTAINER_SIM_ROOT: simRoot}});
	for await (const line of client.stdout!) {
		if (String(line).includes('up')) {
			break;
		}
	}

	client.kill('SIGKILL');
	await client;
	await sleep(300);
	const [record] = JSON.parse((await container(['inspect', 'orphan'])).stdout) as Array<{status: {state: string}}>;
	assert.equal(record?.status.state, 'running');
	const {mainPid, vmPid} = JSON.parse(fs.readFileSync(path.join(simRoot, 'containers', 'orphan', 'record.json'), 'utf8')) as {mainPid: number; vmPid: number};
	assert.equal((await container(['delete', 'orphan'])).exitCode, 1);
	const deleted = await container(['delete', '-f', 'orphan']);
	assert.equal(deleted.exitCode, 0, deleted.stderr);
	for (const pid of [mainPid, vmPid]) {
		assert.equal(running(pid), false, `process ${pid} is left`);
	}

	assert.equal((await container(['list', '--all', '--quiet'])).stdout, '');
});
