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
import {inspectArchive, LayoutWriter, packLayoutToArchive} from '../../src/oci/index.js';
import {createAppleContainerDriver} from '../../src/sandboxes/apple-container/index.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {parseVersion} from '../../src/sandboxes/apple-container/container-cli.js';
import {
	parseContainerList, parseImageInspect, parseImageList, parseSystemStatus, parseVolumeList, versionList,
} from '../../src/sandboxes/apple-container/shapes.js';

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
		assert.equal(loaded.stdout, 'docker.io/library/busybox:latest', '1.x prints the references only');
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
	assert.deepEqual(Object.keys(JSON.parse(running.stdout) as object), ['apiServerAppName', 'apiServerBuild', 'apiServerCommit', 'apiServerVersion', 'appRoot', 'installRoot', 'logRoot', 'status'], '1.x: sorted keys');
	assert.ok(running.stdout.includes('"installRoot":"\\/usr\\/local\\/"'), 'slashes escaped, as Swift\'s JSONEncoder does');
	for (const [version, parsed] of [['0.12.3', [0, 12, 3]], ['1.2.2', [1, 2, 2]], ['1.4.1', [1, 4, 1]]] as const) {
		const status = await container(['system', 'status', '--format', 'json'], {CONTAINER_SIM_VERSION: version});
		assert.deepEqual(parseSystemStatus(JSON.parse(status.stdout), parsed).data?.status, 'running', version);
		const down = await container(['system', 'status', '--format', 'json'], {CONTAINER_SIM_VERSION: version, CONTAINER_SIM_ROOT: path.join(root, 'never-started')});
		assert.equal(down.exitCode, 1);
		assert.deepEqual(parseSystemStatus(JSON.parse(down.stdout), parsed).data?.status, 'unregistered', version);
	}

	assert.deepEqual(JSON.parse((await container(['system', 'status', '--format', 'json'], {CONTAINER_SIM_VERSION: '1.4.1', CONTAINER_SIM_ROOT: path.join(root, 'never-started')})).stdout), {status: 'unregistered'});
	assert.equal(parseSystemStatus(JSON.parse((await container(['system', 'status', '--format', 'json'], {CONTAINER_SIM_VERSION: '1.4.1'})).stdout), [1, 2, 2]).success, false, 'nested in 1.4.1');
	const described = await container(['system', 'version', '--format', 'json'], {CONTAINER_SIM_VERSION: '1.2.0-4-g1275b70'});
	assert.deepEqual(versionList.parse(JSON.parse(described.stdout)).map(entry => [entry.appName, parseVersion(entry.version)]), [['container', [1, 2, 0]], ['container-apiserver', [1, 2, 0]]]);
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

test('image list/inspect and container list/inspect print the shapes of each version, read by the driver\'s own schemas', {skip: !canRun}, async () => {
	const images = JSON.parse((await container(['image', 'list', '--format', 'json'])).stdout) as Array<Record<string, unknown>>;
	assert.deepEqual(Object.keys(images[0]!), ['configuration', 'id', 'variants'], 'ImageResource: no top-level name, labels or index');
	assert.equal(parseImageList(images, [1, 2, 2])[0]?.name, 'docker.io/library/busybox:latest');
	assert.equal(parseImageInspect(JSON.parse((await container(['image', 'inspect', 'busybox'])).stdout), [1, 2, 2])[0]?.name, 'docker.io/library/busybox:latest');
	assert.equal(parseImageList(JSON.parse((await container(['image', 'list', '--format', 'json'], {CONTAINER_SIM_VERSION: '0.12.3'})).stdout), [0, 12, 3])[0]?.name, 'docker.io/library/busybox:latest');
	assert.equal(parseImageInspect(JSON.parse((await container(['image', 'inspect', 'busybox'], {CONTAINER_SIM_VERSION: '0.12.3'})).stdout), [0, 12, 3])[0]?.name, 'docker.io/library/busybox:latest');
	assert.match((await container(['image', 'inspect', 'nope'])).stderr, /^Error: notFound: "image not found: nope"$/);
	const id = (await container(['run', '-d', '--name', 'shapes', '-l', 'k=v', '--cap-add', 'SYS_ADMIN', '-c', '2', '-m', '512M', 'busybox', 'sleep', '30'])).stdout;
	assert.equal(id, 'shapes');
	const listedJson = JSON.parse((await container(['list', '--all', '--format', 'json'])).stdout) as Array<{configuration: {resources: object; initProcess: object}}>;
	assert.deepEqual(parseContainerList(listedJson, [1, 2, 2]).map(entry => [entry.id, entry.state, entry.labels, entry.capAdd]), [['shapes', 'running', {k: 'v'}, ['SYS_ADMIN']]]);
	assert.equal('capAdd' in listedJson[0]!.configuration.initProcess, false, 'capAdd lives in configuration');
	assert.deepEqual(listedJson[0]!.configuration.resources, {cpus: 2, memoryInBytes: 512 * 1024 * 1024});
	assert.equal(parseContainerList(JSON.parse((await container(['inspect', 'shapes'])).stdout), [1, 2, 2])[0]?.id, 'shapes');
	const old = parseContainerList(JSON.parse((await container(['list', '--format', 'json'], {CONTAINER_SIM_VERSION: '0.12.3'})).stdout), [0, 12, 3]);
	assert.deepEqual(old.map(entry => [entry.id, entry.state]), [['shapes', 'running']]);
	const stopped = await container(['stop', '-t', '1', 'shapes']);
	assert.equal(stopped.stdout, 'shapes');
	assert.equal(parseContainerList(JSON.parse((await container(['inspect', 'shapes'])).stdout), [1, 2, 2])[0]?.state, 'stopped');
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

/** A two-platform OCI archive (ppc64le, arm64) tagged `tag`, made here (no network, no root). */
const twoPlatformArchive = async (name: string, tag: string): Promise<string> => {
	const dir = path.join(root, name);
	fs.mkdirSync(path.join(dir, 'tree'), {recursive: true});
	fs.writeFileSync(path.join(dir, 'tree', 'hello'), name);
	const layer = path.join(dir, 'layer.tar');
	await tar.c({cwd: path.join(dir, 'tree'), file: layer}, ['hello']);
	const writer = new LayoutWriter(path.join(dir, 'layout'));
	const ppc = await writer.addImage({layers: [layer], architecture: 'ppc64le'});
	const arm = await writer.addImage({layers: [layer], architecture: 'arm64'});
	await writer.finish(await writer.addIndex([ppc, arm]));
	const archive = path.join(dir, 'multi.tar');
	await packLayoutToArchive(path.join(dir, 'layout'), archive, {tags: [tag]});
	return archive;
};

const callsOf = (): string[][] => fs.readFileSync(path.join(simRoot, 'calls.jsonl'), 'utf8').trim().split('\n').map(line => (JSON.parse(line) as {argv: string[]}).argv);

test('version gates: a flag newer than the simulated version is an unknown option (exit 64)', async () => {
	const gates = [
		[['run', '--rosetta'], '0.7.0'], [['run', '--read-only'], '0.8.0'], [['run', '--ulimit', 'nofile=1'], '0.9.0'], [['run', '--init'], '0.10.0'],
		[['run', '--runtime', 'x'], '0.10.0'], [['run', '--cap-add', 'ALL'], '0.12.0'], [['run', '--shm-size', '1G'], '1.0.0'], [['run', '--kernel-arg', 'quiet'], '1.2.0'],
		[['run', '--read-only-path', 'NONE'], '1.2.1'], [['system', 'status', '--format', 'json'], '0.10.0'],
	] as const;
	const previous = (version: string): string => {
		const [major, minor, patch] = version.split('.').map(Number) as [number, number, number];
		return patch > 0 ? `${major}.${minor}.${patch - 1}` : minor > 0 ? `${major}.${minor - 1}.9` : `${major - 1}.12.3`;
	};

	for (const [args, since] of gates) {
		const flag = args.find(arg => arg.startsWith('--'))!;
		const argv = args[0] === 'run' ? [...args, 'nothing-here'] : [...args];
		const older = await container(argv, {CONTAINER_SIM_VERSION: previous(since)});
		assert.equal(older.exitCode, 64, `${flag} before ${since}`);
		assert.match(older.stderr, new RegExp(`Unknown option '${flag}'`));
		const newer = await container(argv, {CONTAINER_SIM_VERSION: since});
		assert.notEqual(newer.exitCode, 64, `${flag} from ${since}: ${newer.stderr}`);
	}

	assert.equal((await container(['system', 'version'], {CONTAINER_SIM_VERSION: '0.9.0'})).exitCode, 64, 'system version arrived in 0.10.0');
});

test('run refuses what Parser.labels and the name check refuse: k=v=w, an empty label, a name over 63 characters (1.2.0+)', async () => {
	const bad = await container(['run', '-l', 'dev.exobuild.owner=a=b', 'nothing-here']);
	assert.equal(bad.exitCode, 1);
	assert.equal(bad.stderr, 'Error: invalidArgument: "invalid label format dev.exobuild.owner=a=b"');
	assert.equal((await container(['run', '-l', '', 'nothing-here'])).stderr, 'Error: invalidArgument: "label cannot be an empty string"');
	const long = `exobuild-${'a'.repeat(55)}`;
	assert.equal((await container(['run', '--name', long, 'nothing-here'])).stderr, `Error: invalidArgument: "container ID ${long} is not a valid container ID"`);
	assert.match((await container(['run', '--name', long, 'nothing-here'], {CONTAINER_SIM_VERSION: '1.1.0'})).stderr, /image nothing-here not found/, 'before 1.2.0 only the pattern');
	assert.match((await container(['run', '--name', `exobuild-${'a'.repeat(54)}`, 'nothing-here'])).stderr, /image nothing-here not found/, '63 is fine');
});

test('image load: -i or stdin; /dev/fd/N refused (the images service opens the path); 0.x prints "Loaded images:" first', async () => {
	const archive = await twoPlatformArchive('load', 'loadme:1');
	const fromStdin = await execa(cli, ['image', 'load'], {reject: false, inputFile: archive, env: {CONTAINER_SIM_ROOT: simRoot}});
	assert.equal(fromStdin.exitCode, 0, fromStdin.stderr);
	assert.equal(fromStdin.stdout, 'docker.io/library/loadme:1');
	const old = await container(['image', 'load', '-i', archive], {CONTAINER_SIM_VERSION: '0.12.3'});
	assert.equal(old.stdout, 'Loaded images:\ndocker.io/library/loadme:1');
	const fd = await execa(cli, ['image', 'load', '-i', '/dev/fd/0'], {reject: false, inputFile: archive, env: {CONTAINER_SIM_ROOT: simRoot}});
	assert.equal(fd.exitCode, 1);
	assert.match(fd.stderr, /^Error: notFound: "\/dev\/fd\/0"/);
	const inspected = parseImageInspect(JSON.parse((await container(['image', 'inspect', 'loadme:1'])).stdout), [1, 2, 2]);
	assert.deepEqual(inspected[0]?.platforms, ['linux/ppc64le', 'linux/arm64'], 'a multi-platform index is one image');
});

test('image save writes one index per reference, filtered to --platform, named under Apple\'s, containerd\'s and the OCI key', async () => {
	await container(['image', 'load', '-i', await twoPlatformArchive('save', 'saveme:1')]);
	const out = path.join(root, 'saved.tar');
	const saved = await container(['image', 'save', '--platform', 'linux/arm64', '-o', out, 'saveme:1']);
	assert.equal(saved.exitCode, 0, saved.stderr);
	const layout = path.join(root, 'saved');
	fs.mkdirSync(layout);
	await tar.x({file: out, cwd: layout});
	const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8')) as {manifests: Array<{mediaType: string; digest: string; annotations: Record<string, string>}>};
	assert.equal(index.manifests.length, 1);
	assert.equal(index.manifests[0]!.mediaType, 'application/vnd.oci.image.index.v1+json', 'the store keeps indexes');
	assert.deepEqual(Object.values(index.manifests[0]!.annotations), ['docker.io/library/saveme:1', 'docker.io/library/saveme:1', 'docker.io/library/saveme:1']);
	const inner = JSON.parse(fs.readFileSync(path.join(layout, 'blobs', 'sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as {manifests: Array<{platform: {architecture: string}}>};
	assert.deepEqual(inner.manifests.map(entry => entry.platform.architecture), ['arm64']);
	const none = await container(['image', 'save', '--platform', 'linux/s390x', '-o', out, 'saveme:1']);
	assert.equal(none.stderr, 'Error: invalidArgument: "image docker.io/library/saveme:1 has no content for platform linux/s390x; available platforms: linux/ppc64le, linux/arm64"');
});

test('build -o type=oci,dest=F writes nothing at F and fails (the shim wrote out.tar); an existing F is refused; -t loads into the store', async () => {
	const result = await twoPlatformArchive('build', 'built:1');
	const context = path.join(root, 'context');
	fs.mkdirSync(context);
	fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM scratch\n');
	const env = {CONTAINER_SIM_BUILD_RESULT: result};
	const dest = path.join(root, 'dest.tar');
	const oci = await container(['build', '-t', 'demo:1', '-o', `type=oci,dest=${dest}`, context], env);
	assert.equal(oci.exitCode, 1);
	assert.equal(fs.existsSync(dest), false, 'dest is not written');
	fs.writeFileSync(dest, 'mine');
	const exists = await container(['build', '-o', `type=tar,dest=${dest}`, context], env);
	assert.equal(exists.stderr, `Error: invalidExport: "${dest}: dest path already exists"`);
	assert.equal(fs.readFileSync(dest, 'utf8'), 'mine');
	fs.rmSync(dest);
	const asTar = await container(['build', '-o', `type=tar,dest=${dest}`, context], env);
	assert.equal(asTar.exitCode, 0, asTar.stderr);
	assert.equal(fs.readFileSync(dest).equals(fs.readFileSync(result)), true, 'tar moves out.tar to dest');
	const tagged = await container(['build', '-t', 'demo:1', context], env);
	assert.equal(tagged.exitCode, 0, tagged.stderr);
	assert.equal(tagged.stdout, 'docker.io/library/demo:1');
	assert.deepEqual(parseImageInspect(JSON.parse((await container(['image', 'inspect', 'demo:1'])).stdout), [1, 2, 2])[0]?.platforms, ['linux/ppc64le', 'linux/arm64']);
	assert.match((await container(['build', '-t', 'demo:1', context])).stderr, /not simulated/, 'no stand-in result: no build');
});

test('the driver\'s buildImage: build -t (no --output), then image save --platform, one manifest at dest, the temporary name deleted', async () => {
	const saved = {cli: process.env['EXOBUILD_CONTAINER_CLI'], root: process.env['CONTAINER_SIM_ROOT'], result: process.env['CONTAINER_SIM_BUILD_RESULT']};
	Object.assign(process.env, {EXOBUILD_CONTAINER_CLI: cli, CONTAINER_SIM_ROOT: simRoot, CONTAINER_SIM_BUILD_RESULT: await twoPlatformArchive('driver-build', 'ignored:1')});
	try {
		const context = path.join(root, 'driver-context');
		fs.mkdirSync(context);
		fs.writeFileSync(path.join(context, 'Containerfile'), 'FROM scratch\n');
		const work = path.join(root, 'driver-work');
		fs.mkdirSync(work);
		const dest = path.join(work, 'builder.tar');
		const driver = createAppleContainerDriver({cpus: 3, memory: '6G'});
		await driver.buildImage!({containerfile: path.join(context, 'Containerfile'), contextDir: context, buildArgs: {A: 'b'}, platform: 'linux/ppc64le', dest});
		const inspected = await inspectArchive(dest);
		assert.equal(inspected.kind, 'manifest');
		assert.deepEqual(inspected.images.map(image => image.platform), ['linux/ppc64le']);
		assert.equal((await inspected.images[0]!.readFile('/hello'))?.toString(), 'driver-build');
		assert.deepEqual(fs.readdirSync(work), ['builder.tar'], 'nothing else left');
		const build = callsOf().find(argv => argv[0] === 'build' && argv.includes('--build-arg'))!;
		const reference = build[build.indexOf('--tag') + 1]!;
		assert.deepEqual(build.slice(0, 3), ['build', '--file', path.join(context, 'Containerfile')]);
		assert.ok(!build.includes('--output') && !build.includes('-o'), build.join(' '));
		for (const [flag, value] of [['--platform', 'linux/ppc64le'], ['--cpus', '3'], ['--memory', '6G'], ['--build-arg', 'A=b']] as const) {
			assert.equal(build[build.indexOf(flag) + 1], value, flag);
		}

		assert.ok(callsOf().some(argv => argv.join(' ').startsWith(`image save --platform linux/ppc64le --output `) && argv.at(-1) === reference));
		assert.equal((await container(['image', 'inspect', reference])).exitCode, 1, `${reference} is deleted`);
	} finally {
		for (const [key, value] of [['EXOBUILD_CONTAINER_CLI', saved.cli], ['CONTAINER_SIM_ROOT', saved.root], ['CONTAINER_SIM_BUILD_RESULT', saved.result]] as const) {
			if (value === undefined) {
				delete process.env[key];
			} else {
				process.env[key] = value;
			}
		}
	}
});

test('Rosetta: --rosetta registers vminitd\'s entry (flags CF, /run/rosetta/rosetta) in the VM\'s one binfmt_misc table, unmounted in the container', {skip: !canRun}, async () => {
	const show = ['busybox', 'sh', '-c', 'mount | grep -c binfmt_misc; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && cat /proc/sys/fs/binfmt_misc/* 2>/dev/null | grep -E "^(interpreter|flags)"'];
	const name = os.machine() === 'aarch64' ? 'x86_64' : 'aarch64';
	const on = await container(['run', '--rm', '--rosetta', '--cap-add', 'ALL', '--read-only-path', 'NONE', ...show]);
	assert.equal(on.exitCode, 0, on.stderr);
	assert.deepEqual(on.stdout.split('\n'), ['0', 'interpreter /run/rosetta/rosetta', 'flags: OCF'], `the ${name} entry, not mounted in the container`);
	const off = await container(['run', '--rm', '--cap-add', 'ALL', '--read-only-path', 'NONE', ...show]);
	assert.equal(off.stdout, '0', 'no entry without Rosetta');
});

test('CONTAINER_DEFAULT_PLATFORM changes the platform `run` picks unless --platform is given (why the driver always passes it)', {skip: !canRun}, async () => {
	const host = `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`;
	const other = host === 'linux/amd64' ? 'linux/s390x' : 'linux/amd64';
	const defaulted = await container(['run', '--rm', 'busybox', 'true'], {CONTAINER_DEFAULT_PLATFORM: other});
	assert.equal(defaulted.exitCode, 1);
	assert.match(defaulted.stderr, new RegExp(`has no platform ${other}`));
	const explicit = await container(['run', '--rm', '--platform', host, 'busybox', 'true'], {CONTAINER_DEFAULT_PLATFORM: other});
	assert.equal(explicit.exitCode, 0, explicit.stderr);
});

test('volume create|list|inspect|delete: the grammar and shapes of 0.12.3 and 1.2.2, read by the driver\'s schema; data persists until delete', async () => {
	const make = ['volume', 'create', '--label', 'dev.exobuild.state=buildkit', '--opt', 'journal=ordered', 'vol-a'];
	for (const version of ['0.12.3', '1.2.2']) {
		const env = {CONTAINER_SIM_VERSION: version};
		const created = await container(make, env);
		assert.equal(created.exitCode, 0, created.stderr);
		assert.equal(created.stdout, 'vol-a', 'VolumeCreate prints the name');
		assert.match((await container(make, env)).stderr, /^Error: exists: "volume 'vol-a' already exists"/);
		const listed = await container(['volume', 'ls', '--format', 'json'], env);
		const raw = (JSON.parse(listed.stdout) as Array<Record<string, unknown>>)[0]!;
		if (version === '0.12.3') {
			assert.equal(typeof raw['createdAt'], 'number', '0.x: the default encoder, seconds since 2001');
			assert.equal(raw['id'], undefined);
		} else {
			assert.deepEqual(Object.keys(raw), ['configuration', 'id'], '1.x: VolumeResource, keys sorted');
		}

		const [volume] = parseVolumeList(JSON.parse(listed.stdout), parseVersion(version)!);
		assert.deepEqual([volume?.name, volume?.labels], ['vol-a', {'dev.exobuild.state': 'buildkit'}]);
		const inspected = await container(['volume', 'inspect', 'vol-a'], env);
		assert.equal(parseVolumeList(JSON.parse(inspected.stdout), parseVersion(version)!)[0]?.name, 'vol-a');
		assert.match(inspected.stdout, /^\[\n {2}\{\n/, 'pretty-printed in both eras');
		assert.match((await container(['volume', 'inspect', 'vol-a', 'nope'], env)).stderr,
			version === '0.12.3' ? /notFound: "volume 'nope' not found"/ : /notFound: "volume not found: nope"/);
		fs.writeFileSync(path.join(volume!.source, 'kept'), 'x');
		assert.match((await container(['v', 'rm', 'vol-a', 'nope'], env)).stderr, /notFound: "failed to delete one or more volumes: \["nope"\]"/);
		assert.equal(fs.existsSync(path.join(volume!.source, 'kept')), true, 'nothing deleted when one is missing');
		const deleted = await container(['volume', 'delete', 'vol-a'], env);
		assert.deepEqual([deleted.exitCode, deleted.stdout], [0, 'vol-a']);
		assert.equal(fs.existsSync(volume!.source), false);
	}

	// 1.x validates the arguments; a journal mode is checked from 0.12.0; names follow VolumeStorage's pattern.
	assert.match((await container(['volume', 'delete'])).stderr, /invalidArgument: "no volumes specified and --all not supplied"/);
	assert.match((await container(['volume', 'create', '--opt', 'journal=fast', 'vol-b'])).stderr, /invalid journal mode 'fast'/);
	assert.equal((await container(['volume', 'create', '--opt', 'journal=fast', 'vol-b'], {CONTAINER_SIM_VERSION: '0.11.0'})).exitCode, 0, 'not read before 0.12.0');
	assert.equal((await container(['volume', 'delete', 'vol-b'])).exitCode, 0);
	assert.match((await container(['volume', 'create', '-bad'])).stderr, /Unknown option/);
	assert.match((await container(['volume', 'create', 'a/b'])).stderr, /invalid volume name 'a\/b'/);
	assert.equal((await container(['volume', 'list'], {CONTAINER_SIM_VERSION: '0.3.0'})).exitCode, 64, 'volumes arrived in 0.4.0');
});

test('run -v NAME:DST attaches a named volume (made when missing); its data outlives the container; delete refuses a volume in use', {skip: !canRun}, async () => {
	assert.equal((await container(['volume', 'create', 'kept-state'])).exitCode, 0);
	const first = await container(['run', '--rm', '--volume', 'kept-state:/state', 'busybox', 'sh', '-c', 'echo first > /state/file']);
	assert.equal(first.exitCode, 0, first.stderr);
	const second = await container(['run', '--rm', '-v', 'kept-state:/state', 'busybox', 'cat', '/state/file']);
	assert.deepEqual([second.exitCode, second.stdout], [0, 'first']);
	const auto = await container(['run', '--rm', '-v', 'made-by-run:/state', 'busybox', 'true']);
	assert.equal(auto.exitCode, 0, auto.stderr);
	assert.ok(parseVolumeList(JSON.parse((await container(['volume', 'list', '--format', 'json'])).stdout), [1, 2, 2]).some(volume => volume.name === 'made-by-run'));
	assert.match((await container(['run', '--rm', '-v', '-x:/state', 'busybox', 'true'])).stderr, /invalid volume name '-x'/);

	const holder = await container(['run', '-d', '--name', 'holder', '-v', 'kept-state:/state', 'busybox', 'sleep', '600']);
	assert.equal(holder.exitCode, 0, holder.stderr);
	const refused = await container(['volume', 'delete', 'kept-state']);
	assert.equal(refused.exitCode, 1);
	assert.match(refused.stderr, /internalError: "delete failed for one or more volumes: \["kept-state"\]"/);
	assert.equal((await container(['delete', '--force', 'holder'])).exitCode, 0);
	assert.equal((await container(['volume', 'delete', 'kept-state', 'made-by-run'])).exitCode, 0);
});
