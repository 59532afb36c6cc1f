/**
 * Every docker build flag exobuild takes, through the CLI, in real emulated builds (linux-userns,
 * buildah): each one's effect on the result is checked; each refused one, its message. Secrets
 * are checked to stay out of the image, the progress output and the agent's argv.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {execa} from 'execa';
import * as tar from 'tar';
import {inspectArchive} from '../../src/oci/index.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, bin, exobuild, exobuildEnv, fixturesDir, makeContext} from './helpers.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-flags-'));
after(() => fs.rmSync(work, {recursive: true, force: true}));
let layout: string;
before(async () => {
	layout = await busyboxLayout(['linux/ppc64le', 'linux/s390x'], path.join(fixturesDir, 'busybox'));
});

const secretText = `s3cret-${crypto.randomBytes(6).toString('hex')}`;
const envSecret = `env-${crypto.randomBytes(6).toString('hex')}`;

const context = makeContext(path.join(work, 'ctx'), {
	Dockerfile: [
		'FROM busybox AS base',
		'RUN uname -m > /m',
		'FROM base AS final',
		'COPY --from=assets hello.txt /hello.txt',
		'RUN --mount=type=secret,id=token md5sum /run/secrets/token | cut -d" " -f1 > /token.md5',
		'RUN --mount=type=secret,id=fromenv md5sum /run/secrets/fromenv | cut -d" " -f1 > /env.md5',
		'RUN grep -c exobuild-host /etc/hosts > /hosts; grep exobuild-host /etc/hosts >> /hosts',
		'RUN df -k /dev/shm | tail -1 > /shm',
		'RUN ulimit -n > /nofile',
		'RUN cat /proc/net/dev > /nets',
		'',
	].join('\n'),
});
const assets = makeContext(path.join(work, 'assets'), {'hello.txt': 'from a local folder context\n'});
const secretFile = path.join(work, 'token.txt');
fs.writeFileSync(secretFile, secretText);
const md5 = (text: string): string => crypto.createHash('md5').update(text).digest('hex');

test('labels, annotations, named local context, secrets (file and env), add-host, shm-size, ulimit, network none, SOURCE_DATE_EPOCH, metadata file, iidfile, -o docker/local/tar', async () => {
	const oci = path.join(work, 'image.tar');
	const metadata = path.join(work, 'metadata.json');
	const iid = path.join(work, 'iid.txt');
	const result = await exobuild([
		'build', '--progress', 'plain', '--platform', 'linux/ppc64le',
		'--build-context', `busybox=oci-layout://${layout}`, '--build-context', `assets=${assets}`,
		'--label', 'org.example.team=builds', '--label', 'org.example.note=two words',
		'--annotation', 'org.example.annotated=yes',
		'--secret', `id=token,src=${secretFile}`, '--secret', 'id=fromenv,env=EXO_TEST_SECRET',
		'--add-host', 'exobuild-host:10.1.2.3', '--shm-size', '32m', '--ulimit', 'nofile=512:1024',
		'--network', 'none', '--pull', '-t', 'flags/test:1',
		'--metadata-file', metadata, '--iidfile', iid, '--output', `type=oci,dest=${oci}`, context,
	], {env: {EXO_TEST_SECRET: envSecret, SOURCE_DATE_EPOCH: '86400'}});
	assert.equal(result.exitCode, 0, result.all);

	const [image] = (await inspectArchive(oci)).images;
	const read = async (file: string): Promise<string> => (await image!.readFile(file))?.toString('utf8').trim() ?? `<no ${file}>`;
	assert.equal(await read('/m'), 'ppc64le');
	assert.equal(await read('/hello.txt'), 'from a local folder context');
	assert.equal(await read('/token.md5'), md5(secretText), 'the file secret reached the RUN step');
	assert.equal(await read('/env.md5'), md5(envSecret), 'the env secret reached the RUN step');
	const [count, line] = (await read('/hosts')).split('\n');
	assert.equal(count, '1');
	assert.match(line ?? '', /^10\.1\.2\.3\s+exobuild-host$/);
	assert.match(await read('/shm'), /\s32768\s/, '32m of /dev/shm');
	assert.equal(await read('/nofile'), '512');
	assert.deepEqual((await read('/nets')).split('\n').slice(2).map(line => line.trim().split(':')[0]), ['lo'], 'no network but loopback');
	assert.equal(image!.config.config?.Labels?.['org.example.team'], 'builds');
	assert.equal(image!.config.config?.Labels?.['org.example.note'], 'two words');
	assert.equal(image!.config.created, new Date(86_400_000).toISOString().replace('.000Z', 'Z'), 'SOURCE_DATE_EPOCH sets the creation time');

	// Secrets are nowhere but in the RUN steps: not in the image, not in the output.
	const archiveBytes = fs.readFileSync(oci);
	for (const secret of [secretText, envSecret]) {
		assert.equal(archiveBytes.includes(secret), false, 'not in the archive (compressed layers are checked through files above)');
		assert.equal(String(result.all).includes(secret), false, 'not in the progress output');
	}

	for (const file of ['/token.md5', '/env.md5', '/m', '/hello.txt']) {
		// eslint-disable-next-line no-await-in-loop
		assert.equal((await read(file)).includes(secretText), false);
	}

	const meta = JSON.parse(fs.readFileSync(metadata, 'utf8')) as Record<string, unknown>;
	assert.equal(meta['containerimage.digest'], String(result.stdout).trim());
	assert.match(String(meta['containerimage.config.digest']), /^sha256:[a-f\d]{64}$/);
	assert.equal(meta['image.name'], 'docker.io/flags/test:1');
	assert.equal(fs.readFileSync(iid, 'utf8'), meta['containerimage.config.digest']);
	const manifest = JSON.parse((await readTarFile(oci, `blobs/sha256/${image!.manifestDigest.slice(7)}`)).toString()) as {annotations?: Record<string, string>};
	assert.equal(manifest.annotations?.['org.example.annotated'], 'yes', 'the annotation is on the manifest');
	await assertNothingLeft();
});

test('-f - reads the Dockerfile from stdin; -q prints only the digest; -o docker, -o DIR (local) and -o - (tar to stdout)', async () => {
	const docker = path.join(work, 'docker.tar');
	const quiet = await execa(bin, ['build', '-q', '-f', '-', '--platform', 'linux/s390x', '--build-context', `busybox=oci-layout://${layout}`,
		'-t', 'flags/docker:1', '--output', `type=docker,dest=${docker}`, path.join(work, 'assets')], {
		reject: false, all: true, env: exobuildEnv, input: 'FROM busybox\nCOPY hello.txt /\nRUN uname -m > /m\n',
	});
	assert.equal(quiet.exitCode, 0, quiet.all);
	assert.match(quiet.stdout, /^sha256:[a-f\d]{64}$/);
	assert.equal(quiet.stderr, '', '-q: nothing on stderr');
	const entries: string[] = [];
	await tar.t({file: docker, onReadEntry: entry => entries.push(entry.path)});
	assert.ok(entries.includes('manifest.json'));
	const dockerManifest = JSON.parse((await readTarFile(docker, 'manifest.json')).toString()) as Array<{RepoTags: string[]; Layers: string[]}>;
	assert.deepEqual(dockerManifest[0]!.RepoTags, ['flags/docker:1']);

	const local = path.join(work, 'rootfs');
	const withDockerfile = makeContext(path.join(work, 'local-ctx'), {Dockerfile: 'FROM busybox\nRUN uname -m > /m\n'});
	const localBuild = await exobuild(['build', '--platform', 'linux/s390x,linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '-o', local, withDockerfile]);
	assert.equal(localBuild.exitCode, 0, localBuild.all);
	assert.equal(fs.readFileSync(path.join(local, 'linux_s390x', 'm'), 'utf8').trim(), 's390x');
	assert.equal(fs.readFileSync(path.join(local, 'linux_ppc64le', 'm'), 'utf8').trim(), 'ppc64le');
	assert.ok(fs.lstatSync(path.join(local, 'linux_s390x', 'bin', 'sh')).isFile() || fs.lstatSync(path.join(local, 'linux_s390x', 'bin', 'sh')).isSymbolicLink());

	const streamed = await execa(bin, ['build', '--progress', 'quiet', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '-o', '-', withDockerfile], {
		reject: false, env: exobuildEnv, encoding: 'buffer',
	});
	assert.equal(streamed.exitCode, 0, String(streamed.stderr));
	const streamedTar = path.join(work, 'stream.tar');
	fs.writeFileSync(streamedTar, streamed.stdout as unknown as Uint8Array);
	assert.equal((await readTarFile(streamedTar, 'm')).toString().trim(), 'ppc64le', 'the root filesystem came out on stdout');
	await assertNothingLeft();
});

test('--ssh ID=KEYFILE and --ssh default (the SSH_AUTH_SOCK agent) give RUN --mount=type=ssh an agent socket', async () => {
	const key = path.join(work, 'id_ed25519');
	await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
	const agent = await execa('ssh-agent', ['-s', '-a', path.join(work, 'agent.sock')]);
	const agentPid = /SSH_AGENT_PID=(\d+)/.exec(agent.stdout)?.[1];
	try {
		const sshContext = makeContext(path.join(work, 'ssh'), {
			Dockerfile: 'FROM busybox\nRUN --mount=type=ssh,id=deploy test -S "$SSH_AUTH_SOCK" && echo deploy-ok > /deploy\nRUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo default-ok > /default\n',
		});
		const dest = path.join(work, 'ssh.tar');
		const result = await exobuild(['build', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
			'--ssh', `deploy=${key}`, '--ssh', 'default', '--output', `type=oci,dest=${dest}`, sshContext], {env: {SSH_AUTH_SOCK: path.join(work, 'agent.sock')}});
		assert.equal(result.exitCode, 0, result.all);
		const [image] = (await inspectArchive(dest)).images;
		assert.equal((await image!.readFile('/deploy'))?.toString().trim(), 'deploy-ok');
		assert.equal((await image!.readFile('/default'))?.toString().trim(), 'default-ok');
		assert.equal(fs.readFileSync(dest).includes(fs.readFileSync(key)), false, 'the key is not in the image');
	} finally {
		if (agentPid !== undefined) {
			process.kill(Number(agentPid));
		}
	}

	await assertNothingLeft();
});

test('--target stops at a stage; --progress tty renders on stderr only; -o type=oci,tar=false writes a layout folder', async () => {
	const staged = makeContext(path.join(work, 'staged'), {Dockerfile: 'FROM busybox AS first\nRUN echo one > /first\nFROM first AS second\nRUN echo two > /second\n'});
	const folder = path.join(work, 'layout-out');
	const result = await exobuild(['build', '--progress', 'tty', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
		'--target', 'first', '--output', `type=oci,dest=${folder},tar=false`, staged]);
	assert.equal(result.exitCode, 0, result.all);
	assert.match(String(result.stderr), /Build/, 'listr2 drew its phases, on stderr');
	assert.match(String(result.stdout), /^sha256:[a-f\d]{64}$/, 'stdout carries the digest and nothing else');
	assert.ok(fs.existsSync(path.join(folder, 'index.json')) && fs.existsSync(path.join(folder, 'oci-layout')), 'an OCI layout folder');
	const archive = path.join(work, 'layout-out.tar');
	await tar.c({cwd: folder, file: archive}, ['oci-layout', 'index.json', 'blobs']);
	const [image] = (await inspectArchive(archive)).images;
	assert.equal((await image!.readFile('/first'))?.toString().trim(), 'one');
	assert.equal(await image!.readFile('/second'), undefined, 'the build stopped at --target first');
	await assertNothingLeft();
});

test('what buildah cannot do, and what is not supported, is refused with the flag named and why', async () => {
	const refused = async (args: string[], pattern: RegExp, code: number): Promise<void> => {
		// On a builder without BuildKit (the e2e environment otherwise gives it BuildKit from ../shared/upstream).
		const result = await exobuild(['build', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, ...args, context], {env: {EXO_TEST_SECRET: 'x', EXOBUILD_BUILDKIT: 'none', EXOBUILD_BINFMT: 'none'}});
		assert.equal(result.exitCode, code, result.all);
		assert.match(String(result.stderr), pattern);
		assert.match(String(result.stderr), /\nhint: /);
	};

	await refused(['--no-cache-filter', 'base'], /--no-cache-filter: buildah cannot skip the cache for some stages only/, 2);
	await refused(['--sbom', 'true'], /--sbom: buildah makes no SBOM attestations/, 2);
	await refused(['--provenance', 'mode=max'], /--provenance: buildah makes no provenance attestations/, 2);
	await refused(['--progress', 'rawjson'], /--progress rawjson: buildah has no machine-readable progress/, 2);
	await refused(['--output', 'type=cacheonly'], /--output type=cacheonly is not supported/, 2);
	await refused(['--network', 'bridge'], /invalid --network "bridge"/, 2);
	await refused(['--secret', 'id=nope,env=EXO_UNSET_VARIABLE'], /environment variable EXO_UNSET_VARIABLE is not set/, 2);
	await refused(['--secret', `id=missing,src=${path.join(work, 'absent')}`], /is not a file/, 2);
	await refused(['--ulimit', 'files=1'], /invalid --ulimit "files=1"/, 2);
	await refused(['--shm-size', 'lots'], /invalid --shm-size "lots"/, 2);
	await refused(['--add-host', 'justahost'], /invalid --add-host/, 2);
	await refused(['--ssh', `x=${path.join(work, 'no-such-key')}`], /--ssh x: .* does not exist/, 2);
	await refused(['--cache-from', 'type=gha'], /--cache-from type=gha is not supported/, 2);
	await refused(['--build-context', 'x=docker-image://debian:12'], /docker-image:\/\/ sources are not supported yet/, 2);
	const badEpoch = await exobuild(['build', context], {env: {SOURCE_DATE_EPOCH: 'yesterday'}});
	assert.match(String(badEpoch.stderr), /SOURCE_DATE_EPOCH="yesterday" is not a number/);
	await assertNothingLeft();
});

async function readTarFile(file: string, name: string): Promise<Buffer> {
	const chunks: Buffer[] = [];
	await tar.t({file, filter: entry => entry.replace(/^\.?\//, '') === name, onReadEntry: entry => entry.on('data', (chunk: Buffer) => chunks.push(chunk))});
	return Buffer.concat(chunks);
}
