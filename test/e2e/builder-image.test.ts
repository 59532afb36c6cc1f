/**
 * The distro builder image as `exobuild builder build` makes it: named by its input hash,
 * holding the agent, a probe binary of every architecture of the platform table, and only the
 * emulators of those architectures; and carried to a machine without network by save and load.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {execa} from 'execa';
import {inspectArchive} from '../../src/oci/index.js';
import {architectures} from '../../src/platforms/table.js';
import {removeTree} from '../../src/fs/remove-tree.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {bin, elfMachine, exobuild, exobuildEnv, failure, fixturesDir, makeContext} from './helpers.js';

// ELF e_machine of each architecture's binaries.
const machines: Record<string, number> = {x86_64: 62, i386: 3, aarch64: 183, arm: 40, ppc64le: 21, s390x: 22, riscv64: 243};

test('builder build makes (or finds) the image; inspect prints it; its layers hold what the agent needs', async () => {
	const created = await exobuild(['builder', 'build']);
	assert.equal(created.exitCode, 0, failure(created));
	const inspected = await exobuild(['builder', 'inspect']);
	assert.equal(inspected.exitCode, 0, failure(inspected));
	const image = JSON.parse(String(inspected.stdout)) as {archivePath: string; manifestDigest: string; inputHash: string; kind: string; reference: string};
	assert.equal(image.kind, 'distro');
	assert.equal(image.reference, `exobuild-builder:distro-${image.inputHash.slice(0, 12)}`);
	assert.match(image.archivePath, new RegExp(`${image.inputHash}\\.tar$`));
	assert.deepEqual(JSON.parse(String(created.stdout)), image, 'a second build finds the same image');

	const archive = await inspectArchive(image.archivePath);
	assert.equal(archive.images.length, 1);
	const [builder] = archive.images;
	assert.equal(builder!.manifestDigest, image.manifestDigest);
	const agent = await builder!.readFile('/usr/local/bin/exobuild-agent');
	assert.match(agent?.toString() ?? '', /^#!\/bin\/sh\n/);
	for (const arch of architectures) {
		const probe = await builder!.readFile(`/usr/lib/exobuild/probes/${arch.qemu}/busybox`);
		assert.ok(probe, `probe of ${arch.qemu}`);
		assert.equal(elfMachine(probe), machines[arch.qemu], `probe of ${arch.qemu} is a binary of that architecture`);
		assert.ok(await builder!.readFile(`/usr/bin/qemu-${arch.qemu}`), `emulator qemu-${arch.qemu}`);
	}

	assert.equal(await builder!.readFile('/usr/bin/qemu-mips64el'), undefined, 'emulators outside the table are left out');
	assert.ok(await builder!.readFile('/usr/bin/buildah'), 'the buildah engine');
	assert.ok(await builder!.readFile('/usr/bin/mawk'), 'awk, which the hang watchdog uses');
});

test('builder save, then load and build with no network (a fresh cache in an empty network namespace)', async () => {
	const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-offline-'));
	try {
		const saved = path.join(work, 'builder.tar');
		const save = await exobuild(['builder', 'save', '-o', saved]);
		assert.equal(save.exitCode, 0, failure(save));
		const layout = await busyboxLayout(['linux/ppc64le'], path.join(fixturesDir, 'busybox'));
		const context = makeContext(path.join(work, 'ctx'), {Dockerfile: 'FROM busybox\nRUN uname -m > /m\n'});
		// A normal user needs a user namespace to own the network namespace: root of it (its own uid
		// and subordinate ids mapped), exobuild there maps its sandboxes 0..65535 as root does.
		const netns = process.getuid?.() === 0 ? ['--net'] : ['--user', '--map-root-user', '--map-auto', '--setgroups', 'allow', '--net'];
		const offline = async (...args: string[]) => execa('unshare', [...netns, '--', bin, ...args], {
			reject: false, all: true, env: {...exobuildEnv, EXOBUILD_CACHE_DIR: path.join(work, 'cache')},
		});
		const noNetwork = await execa('unshare', [...netns, '--', 'getent', 'ahosts', 'deb.debian.org'], {reject: false});
		assert.notEqual(noNetwork.exitCode, 0, 'the namespace really has no network');

		const load = await offline('builder', 'load', '-i', saved);
		assert.equal(load.exitCode, 0, failure(load));
		assert.equal((JSON.parse(String(load.stdout)) as {current: boolean}).current, true);
		const dest = path.join(work, 'out.tar');
		const build = await offline('build', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '--output', `type=oci,dest=${dest}`, context);
		assert.equal(build.exitCode, 0, failure(build));
		assert.doesNotMatch(String(build.stderr), /Making the builder image/, 'the loaded builder was used');
		const [image] = (await inspectArchive(dest)).images;
		assert.equal((await image!.readFile('/m'))?.toString().trim(), 'ppc64le');
	} finally {
		await removeTree(work);
	}
});

test('builder fetch downloads over HTTP, checks the SHA-256, and loads; a wrong digest is refused and nothing is stored', async () => {
	const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-fetch-'));
	const server = http.createServer((request, response) => {
		const file = path.join(work, 'builder.tar');
		response.writeHead(200, {'content-length': fs.statSync(file).size});
		fs.createReadStream(file).pipe(response);
	});
	try {
		const saved = path.join(work, 'builder.tar');
		assert.equal((await exobuild(['builder', 'save', '-o', saved])).exitCode, 0);
		const sha256 = crypto.createHash('sha256').update(fs.readFileSync(saved)).digest('hex');
		await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
		const url = `http://127.0.0.1:${(server.address() as {port: number}).port}/builder.tar`;
		const env = {EXOBUILD_CACHE_DIR: path.join(work, 'cache')};

		const wrong = await exobuild(['builder', 'fetch', url, '--sha256', '0'.repeat(64)], {env});
		assert.equal(wrong.exitCode, 1, wrong.all);
		assert.match(String(wrong.stderr), /checksum mismatch for .*: expected sha256 0{64}, got [a-f\d]{64}/);
		assert.equal((await exobuild(['builder', 'ls', '--json'], {env})).stdout, '[]');

		const fetched = await exobuild(['builder', 'fetch', url, '--sha256', sha256], {env});
		assert.equal(fetched.exitCode, 0, failure(fetched));
		assert.match(String(fetched.stderr), /SHA-256 verified/);
		const listed = JSON.parse(String((await exobuild(['builder', 'ls', '--json'], {env})).stdout)) as Array<{current: boolean; kind: string}>;
		assert.deepEqual(listed.map(image => [image.kind, image.current]), [['distro', true]]);
	} finally {
		server.close();
		fs.rmSync(work, {recursive: true, force: true});
	}
});
