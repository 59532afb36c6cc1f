/**
 * --push against a real registry (Debian's docker-registry on loopback, with htpasswd login):
 * the multi-platform result arrives as an index whose manifests and blobs the registry serves;
 * the credentials come from the docker config; without them the push is refused with the fix.
 */
import assert from 'node:assert/strict';
import {spawn, type ChildProcess} from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {after, before, test} from 'node:test';
import {execa} from 'execa';
import got from 'got';
import {busyboxLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, exobuild, failure, fixturesDir, makeContext} from './helpers.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-push-'));
let registry: ChildProcess | undefined;
let port = 0;
let layout: string;
const auth = Buffer.from('tester:s3cret').toString('base64');

const freePort = async (): Promise<number> => new Promise(resolve => {
	const server = net.createServer().listen(0, '127.0.0.1', () => {
		const {port: free} = server.address() as net.AddressInfo;
		server.close(() => resolve(free));
	});
});

before(async () => {
	layout = await busyboxLayout(['linux/ppc64le', 'linux/s390x'], path.join(fixturesDir, 'busybox'));
	port = await freePort();
	const htpasswd = await execa('htpasswd', ['-Bbn', 'tester', 's3cret']);
	fs.writeFileSync(path.join(work, 'htpasswd'), htpasswd.stdout);
	fs.writeFileSync(path.join(work, 'config.yml'), [
		'version: 0.1',
		`storage: {filesystem: {rootdirectory: ${path.join(work, 'data')}}}`,
		`http: {addr: "127.0.0.1:${port}"}`,
		`auth: {htpasswd: {realm: exobuild-test, path: ${path.join(work, 'htpasswd')}}}`,
		'',
	].join('\n'));
	registry = spawn('docker-registry', ['serve', path.join(work, 'config.yml')], {stdio: 'ignore'});
	for (let attempt = 0; attempt < 100; attempt++) {
		const answer = await got(`http://127.0.0.1:${port}/v2/`, {throwHttpErrors: false, retry: {limit: 0}}).catch(() => undefined);
		if (answer?.statusCode === 401) {
			return;
		}

		await sleep(100);
	}

	throw new Error('docker-registry did not start');
});
after(() => {
	registry?.kill();
	fs.rmSync(work, {recursive: true, force: true});
});

const dockerConfig = (auths: Record<string, unknown>): string => {
	const dir = fs.mkdtempSync(path.join(work, 'docker-'));
	fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({auths}));
	return dir;
};

const fetchJson = async (url: string, accept: string): Promise<Record<string, unknown>> =>
	JSON.parse((await got(url, {headers: {authorization: `Basic ${auth}`, accept}})).body) as Record<string, unknown>;

test('--push sends a two-platform image to the registry with the docker config\'s login; type=registry does the same', async () => {
	const context = makeContext(path.join(work, 'ctx'), {Dockerfile: 'FROM busybox\nRUN uname -m > /m\n'});
	const config = dockerConfig({[`127.0.0.1:${port}`]: {auth}});
	const reference = `127.0.0.1:${port}/team/app:1`;
	const pushed = await exobuild(['build', '--progress', 'plain', '--platform', 'linux/ppc64le,linux/s390x', '--build-context', `busybox=oci-layout://${layout}`,
		'--push', '-t', reference, context], {env: {DOCKER_CONFIG: config}});
	assert.equal(pushed.exitCode, 0, failure(pushed));

	const base = `http://127.0.0.1:${port}/v2/team/app`;
	const index = await fetchJson(`${base}/manifests/1`, 'application/vnd.oci.image.index.v1+json');
	const manifests = index['manifests'] as Array<{digest: string; platform: {architecture: string}}>;
	assert.deepEqual(manifests.map(entry => entry.platform.architecture).sort(), ['ppc64le', 's390x']);
	assert.equal(String(pushed.stdout).trim().length > 0, true);
	for (const entry of manifests) {
		const manifest = await fetchJson(`${base}/manifests/${entry.digest}`, 'application/vnd.oci.image.manifest.v1+json');
		const imageConfig = await fetchJson(`${base}/blobs/${(manifest['config'] as {digest: string}).digest}`, '*/*');
		assert.equal(imageConfig['architecture'], entry.platform.architecture);
	}

	const viaOutput = await exobuild(['build', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
		'--output', `type=registry,name=127.0.0.1:${port}/team/single:2`, context], {env: {DOCKER_CONFIG: config}});
	assert.equal(viaOutput.exitCode, 0, failure(viaOutput));
	const single = await fetchJson(`http://127.0.0.1:${port}/v2/team/single/manifests/2`, 'application/vnd.oci.image.manifest.v1+json');
	assert.equal(single['mediaType'], 'application/vnd.oci.image.manifest.v1+json');
	await assertNothingLeft();
});

test('without a login the push is refused with the fix; --push without a name and type=image without push=true are refused up front', async () => {
	const context = makeContext(path.join(work, 'ctx2'), {Dockerfile: 'FROM busybox\n'});
	const noLogin = await exobuild(['build', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
		'--push', '-t', `127.0.0.1:${port}/team/app:nologin`, context], {env: {DOCKER_CONFIG: dockerConfig({})}});
	assert.equal(noLogin.exitCode, 1, noLogin.all);
	assert.match(String(noLogin.stderr), new RegExp(`exobuild: 127\\.0\\.0\\.1:${port} wants a login\\nhint: docker login 127\\.0\\.0\\.1:${port}`));

	const unnamed = await exobuild(['build', '--push', context]);
	assert.equal(unnamed.exitCode, 2);
	assert.match(String(unnamed.stderr), /--push needs a name for the image/);
	const kept = await exobuild(['build', '--output', 'type=image,name=x/y', context]);
	assert.equal(kept.exitCode, 2);
	assert.match(String(kept.stderr), /type=image without push=true keeps the image nowhere/);
	const helperConfig = fs.mkdtempSync(path.join(work, 'helper-'));
	fs.writeFileSync(path.join(helperConfig, 'config.json'), JSON.stringify({credsStore: 'desktop'}));
	const helper = await exobuild(['build', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '--push', '-t', 'ghcr.io/x/y:1', context], {
		env: {DOCKER_CONFIG: helperConfig},
	});
	assert.equal(helper.exitCode, 2, helper.all);
	assert.match(String(helper.stderr), /credential helper "desktop", which exobuild does not call/);
});
