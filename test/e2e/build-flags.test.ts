/**
 * The e2e matrix: every docker build flag exobuild takes, through the CLI, in real emulated builds
 * (linux-userns) with each engine (`--engine buildah`, `--engine buildkit`): each one's effect on
 * the result is checked; each refused one, its message. Secrets are checked to stay out of the
 * image, the progress output and the agent's argv. An engine the current builder image does not
 * have is skipped with the CLI's own one-line reason.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test, type TestContext} from 'node:test';
import {execa} from 'execa';
import * as tar from 'tar';
import type {EngineName} from '../../src/engines/plan.js';
import {inspectArchive} from '../../src/oci/index.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, bin, exobuild, exobuildEnv, failure, fixturesDir, makeContext} from './helpers.js';

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

/** buildah first: its run also makes the builder image when the cache has none. */
const engineColumns: readonly EngineName[] = ['buildah', 'buildkit'];
const probes = new Map<EngineName, Promise<string | undefined>>();
/**
 * Why `engine` cannot run here (the CLI's refusal when the builder image lacks it), or undefined:
 * a tiny real build with `--engine ENGINE`, once per engine.
 */
const missingEngine = async (engine: EngineName): Promise<string | undefined> => {
	if (!probes.has(engine)) {
		probes.set(engine, (async () => {
			const probe = makeContext(path.join(work, `probe-${engine}`), {Dockerfile: 'FROM busybox\n'});
			const result = await exobuild(['build', '--engine', engine, '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
				'--output', `type=oci,dest=${path.join(work, `probe-${engine}.tar`)}`, probe]);
			if (result.exitCode === 2 && /has no (BuildKit|buildah)/.test(String(result.stderr))) {
				return String(result.stderr).split('\n').find(line => /has no/.test(line));
			}

			assert.equal(result.exitCode, 0, failure(result));
			return undefined;
		})());
	}

	return probes.get(engine)!;
};

/** Skips `t` (true) when the builder image has no `engine`, saying why in one line. */
const skipped = async (t: TestContext, engine: EngineName): Promise<boolean> => {
	const why = await missingEngine(engine);
	if (why !== undefined) {
		t.skip(`${engine}: ${why}`);
	}

	return why !== undefined;
};

for (const engine of engineColumns) {
	const engineArgs = ['--engine', engine];
	const file = (name: string): string => path.join(work, `${engine}-${name}`);

	test(`${engine}: labels, annotations, named local context, secrets (file and env), add-host, shm-size, ulimit, network none, SOURCE_DATE_EPOCH, metadata file, iidfile`, async t => {
		if (await skipped(t, engine)) {
			return;
		}

		const oci = file('image.tar');
		const metadata = file('metadata.json');
		const iid = file('iid.txt');
		const result = await exobuild([
			'build', ...engineArgs, '--progress', 'plain', '--platform', 'linux/ppc64le',
			'--build-context', `busybox=oci-layout://${layout}`, '--build-context', `assets=${assets}`,
			'--label', 'org.example.team=builds', '--label', 'org.example.note=two words',
			'--annotation', 'org.example.annotated=yes',
			'--secret', `id=token,src=${secretFile}`, '--secret', 'id=fromenv,env=EXO_TEST_SECRET',
			'--add-host', 'exobuild-host:10.1.2.3', '--shm-size', '32m', '--ulimit', 'nofile=512:1024',
			'--network', 'none', '--pull', '-t', 'flags/test:1',
			'--metadata-file', metadata, '--iidfile', iid, '--output', `type=oci,dest=${oci}`, context,
		], {env: {EXO_TEST_SECRET: envSecret, SOURCE_DATE_EPOCH: '86400'}});
		assert.equal(result.exitCode, 0, failure(result));

		const [image] = (await inspectArchive(oci)).images;
		const read = async (name: string): Promise<string> => (await image!.readFile(name))?.toString('utf8').trim() ?? `<no ${name}>`;
		assert.equal(await read('/m'), 'ppc64le');
		assert.equal(await read('/hello.txt'), 'from a local folder context');
		assert.equal(await read('/token.md5'), md5(secretText), 'the file secret reached the RUN step');
		assert.equal(await read('/env.md5'), md5(envSecret), 'the env secret reached the RUN step');
		const [count, line] = (await read('/hosts')).split('\n');
		assert.equal(count, '1');
		assert.match(line ?? '', /^10\.1\.2\.3\s+exobuild-host$/);
		assert.match(await read('/shm'), /\s32768\s/, '32m of /dev/shm');
		assert.equal(await read('/nofile'), '512');
		assert.deepEqual((await read('/nets')).split('\n').slice(2).map(entry => entry.trim().split(':')[0]), ['lo'], 'no network but loopback');
		assert.equal(image!.config.config?.Labels?.['org.example.team'], 'builds');
		assert.equal(image!.config.config?.Labels?.['org.example.note'], 'two words');
		assert.equal(image!.config.created, new Date(86_400_000).toISOString().replace('.000Z', 'Z'), 'SOURCE_DATE_EPOCH sets the creation time');

		// Secrets are nowhere but in the RUN steps: not in the image, not in the output.
		const archiveBytes = fs.readFileSync(oci);
		for (const secret of [secretText, envSecret]) {
			assert.equal(archiveBytes.includes(secret), false, 'not in the archive (compressed layers are checked through files above)');
			assert.equal(String(result.all).includes(secret), false, 'not in the progress output');
		}

		for (const name of ['/token.md5', '/env.md5', '/m', '/hello.txt']) {
			assert.equal((await read(name)).includes(secretText), false);
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

	test(`${engine}: -f - reads the Dockerfile from stdin; -q prints only the digest; -o docker, -o DIR (local) and -o - (tar to stdout)`, async t => {
		if (await skipped(t, engine)) {
			return;
		}

		const docker = file('docker.tar');
		const quiet = await execa(bin, ['build', ...engineArgs, '-q', '-f', '-', '--platform', 'linux/s390x', '--build-context', `busybox=oci-layout://${layout}`,
			'-t', 'flags/docker:1', '--output', `type=docker,dest=${docker}`, path.join(work, 'assets')], {
			reject: false, all: true, env: exobuildEnv, input: 'FROM busybox\nCOPY hello.txt /\nRUN uname -m > /m\n',
		});
		assert.equal(quiet.exitCode, 0, failure(quiet));
		assert.match(quiet.stdout, /^sha256:[a-f\d]{64}$/);
		assert.equal(quiet.stderr, '', '-q: nothing on stderr');
		const entries: string[] = [];
		await tar.t({file: docker, onReadEntry: entry => entries.push(entry.path)});
		assert.ok(entries.includes('manifest.json'));
		const dockerManifest = JSON.parse((await readTarFile(docker, 'manifest.json')).toString()) as Array<{RepoTags: string[]; Layers: string[]}>;
		assert.deepEqual(dockerManifest[0]!.RepoTags, ['flags/docker:1']);

		const local = file('rootfs');
		const withDockerfile = makeContext(file('local-ctx'), {Dockerfile: 'FROM busybox\nRUN uname -m > /m\n'});
		const localBuild = await exobuild(['build', ...engineArgs, '--platform', 'linux/s390x,linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '-o', local, withDockerfile]);
		assert.equal(localBuild.exitCode, 0, failure(localBuild));
		assert.equal(fs.readFileSync(path.join(local, 'linux_s390x', 'm'), 'utf8').trim(), 's390x');
		assert.equal(fs.readFileSync(path.join(local, 'linux_ppc64le', 'm'), 'utf8').trim(), 'ppc64le');
		assert.ok(fs.lstatSync(path.join(local, 'linux_s390x', 'bin', 'sh')).isFile() || fs.lstatSync(path.join(local, 'linux_s390x', 'bin', 'sh')).isSymbolicLink());

		const streamed = await execa(bin, ['build', ...engineArgs, '--progress', 'quiet', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, '-o', '-', withDockerfile], {
			reject: false, env: exobuildEnv, encoding: 'buffer',
		});
		assert.equal(streamed.exitCode, 0, String(streamed.stderr));
		const streamedTar = file('stream.tar');
		fs.writeFileSync(streamedTar, streamed.stdout as unknown as Uint8Array);
		assert.equal((await readTarFile(streamedTar, 'm')).toString().trim(), 'ppc64le', 'the root filesystem came out on stdout');
		await assertNothingLeft();
	});

	test(`${engine}: --ssh ID=KEYFILE and --ssh default (the SSH_AUTH_SOCK agent) give RUN --mount=type=ssh an agent socket`, async t => {
		if (await skipped(t, engine)) {
			return;
		}

		const key = file('id_ed25519');
		await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
		const socket = file('agent.sock');
		const agent = await execa('ssh-agent', ['-s', '-a', socket]);
		const agentPid = /SSH_AGENT_PID=(\d+)/.exec(agent.stdout)?.[1];
		try {
			const sshContext = makeContext(file('ssh'), {
				Dockerfile: 'FROM busybox\nRUN --mount=type=ssh,id=deploy test -S "$SSH_AUTH_SOCK" && echo deploy-ok > /deploy\nRUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo default-ok > /default\n',
			});
			const dest = file('ssh.tar');
			const result = await exobuild(['build', ...engineArgs, '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
				'--ssh', `deploy=${key}`, '--ssh', 'default', '--output', `type=oci,dest=${dest}`, sshContext], {env: {SSH_AUTH_SOCK: socket}});
			assert.equal(result.exitCode, 0, failure(result));
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

	test(`${engine}: --target stops at a stage; --progress tty renders on stderr only; -o type=oci,tar=false writes a layout folder`, async t => {
		if (await skipped(t, engine)) {
			return;
		}

		const staged = makeContext(file('staged'), {Dockerfile: 'FROM busybox AS first\nRUN echo one > /first\nFROM first AS second\nRUN echo two > /second\n'});
		const folder = file('layout-out');
		const result = await exobuild(['build', ...engineArgs, '--progress', 'tty', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
			'--target', 'first', '--output', `type=oci,dest=${folder},tar=false`, staged]);
		assert.equal(result.exitCode, 0, failure(result));
		assert.match(String(result.stderr), /Build/, 'listr2 drew its phases, on stderr');
		assert.match(String(result.stdout), /^sha256:[a-f\d]{64}$/, 'stdout carries the digest and nothing else');
		assert.ok(fs.existsSync(path.join(folder, 'index.json')) && fs.existsSync(path.join(folder, 'oci-layout')), 'an OCI layout folder');
		const archive = file('layout-out.tar');
		await tar.c({cwd: folder, file: archive}, ['oci-layout', 'index.json', 'blobs']);
		const [image] = (await inspectArchive(archive)).images;
		assert.equal((await image!.readFile('/first'))?.toString().trim(), 'one');
		assert.equal(await image!.readFile('/second'), undefined, 'the build stopped at --target first');
		await assertNothingLeft();
	});
}

// What only BuildKit has: --no-cache-filter, --provenance, --progress rawjson.
test('buildkit: --no-cache-filter runs the named stage again and takes the others from the cache', async t => {
	if (await skipped(t, 'buildkit')) {
		return;
	}

	const staged = makeContext(path.join(work, 'buildkit-filter'), {Dockerfile: 'FROM busybox AS base\nRUN uname -m > /m\nFROM base AS final\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n'});
	const build = async (name: string, extra: string[]) => {
		const dest = path.join(work, `buildkit-filter-${name}.tar`);
		const result = await exobuild(['build', '--engine', 'buildkit', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
			...extra, '--output', `type=oci,dest=${dest}`, staged]);
		assert.equal(result.exitCode, 0, failure(result));
		const [image] = (await inspectArchive(dest)).images;
		return {output: String(result.all), stamp: (await image!.readFile('/stamp'))?.toString().trim()};
	};

	const cachedSteps = (output: string): string[] => {
		// BuildKit's own lines, after plain progress's time prefix (`#  1.2s `).
		const names = new Map([...output.matchAll(/^(?:#\s+\d+(?:\.\d+)?s )?#(\d+) (\[.*)$/gm)].map(match => [match[1]!, match[2]!]));
		return [...output.matchAll(/^(?:#\s+\d+(?:\.\d+)?s )?#(\d+) CACHED$/gm)].map(match => names.get(match[1]!) ?? `#${match[1]}`);
	};

	const first = await build('first', []);
	const again = await build('again', ['--no-cache-filter', 'final']);
	assert.ok(cachedSteps(again.output).some(name => name.includes('RUN uname -m')), `base's step came from the cache:\n${again.output}`);
	assert.ok(!cachedSteps(again.output).some(name => name.includes('random/uuid')), 'the final stage ran again');
	assert.notEqual(again.stamp, first.stamp, 'a new /stamp');
	await assertNothingLeft();
});

test('buildkit: --provenance mode=max attaches a provenance attestation, made offline', async t => {
	if (await skipped(t, 'buildkit')) {
		return;
	}

	const folder = path.join(work, 'buildkit-provenance');
	const withDockerfile = makeContext(path.join(work, 'buildkit-provenance-ctx'), {Dockerfile: 'FROM busybox\nRUN uname -m > /m\n'});
	const result = await exobuild(['build', '--engine', 'buildkit', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
		'--provenance', 'mode=max', '--output', `type=oci,dest=${folder},tar=false`, withDockerfile]);
	assert.equal(result.exitCode, 0, failure(result));
	const blob = (digest: string): unknown => JSON.parse(fs.readFileSync(path.join(folder, 'blobs', 'sha256', digest.slice(7)), 'utf8'));
	type Descriptor = {digest: string; mediaType: string; annotations?: Record<string, string>};
	const top = JSON.parse(fs.readFileSync(path.join(folder, 'index.json'), 'utf8')) as {manifests: Descriptor[]};
	const descriptors = top.manifests.flatMap(descriptor => (descriptor.mediaType.endsWith('image.index.v1+json') ? (blob(descriptor.digest) as {manifests: Descriptor[]}).manifests : [descriptor]));
	const attestation = descriptors.find(descriptor => descriptor.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest');
	assert.ok(attestation !== undefined, `an attestation manifest in ${JSON.stringify(top)}`);
	const layers = (blob(attestation.digest) as {layers: Descriptor[]}).layers;
	assert.ok(layers.some(layer => layer.annotations?.['in-toto.io/predicate-type']?.startsWith('https://slsa.dev/provenance/')), 'a SLSA provenance predicate');
	await assertNothingLeft();
});

test('buildkit: --progress rawjson passes BuildKit\'s SolveStatus JSON through', async t => {
	if (await skipped(t, 'buildkit')) {
		return;
	}

	const withDockerfile = makeContext(path.join(work, 'buildkit-rawjson'), {Dockerfile: 'FROM busybox\nRUN uname -m > /m\n'});
	const result = await exobuild(['build', '--engine', 'buildkit', '--progress', 'rawjson', '--no-cache', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
		'--output', `type=oci,dest=${path.join(work, 'buildkit-rawjson.tar')}`, withDockerfile]);
	assert.equal(result.exitCode, 0, failure(result));
	const statuses = String(result.all).split('\n').filter(line => line.startsWith('{')).map(line => JSON.parse(line) as {vertexes?: Array<{name?: string}>});
	assert.ok(statuses.some(status => status.vertexes?.some(vertex => vertex.name?.includes('RUN uname -m'))), 'a vertex of the RUN step');
	await assertNothingLeft();
});

/**
 * A copy of the layout `source` whose image configs have no `history` (legal OCI: images made by
 * mmdebstrap and a small script look like this); every other byte is the same.
 */
const withoutHistory = (source: string, target: string): string => {
	const blobs = path.join(target, 'blobs', 'sha256');
	fs.cpSync(source, target, {recursive: true});
	const read = (digest: string): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(blobs, digest.slice(7)), 'utf8')) as Record<string, unknown>;
	const write = (document: Record<string, unknown>): {digest: string; size: number} => {
		const text = JSON.stringify(document);
		const digest = `sha256:${crypto.createHash('sha256').update(text).digest('hex')}`;
		fs.writeFileSync(path.join(blobs, digest.slice(7)), text);
		return {digest, size: Buffer.byteLength(text)};
	};

	type Descriptor = {digest: string; size: number};
	const rewrite = (descriptor: Descriptor): Descriptor => {
		const document = read(descriptor.digest);
		if (Array.isArray(document['manifests'])) {
			return {...descriptor, ...write({...document, manifests: (document['manifests'] as Descriptor[]).map(rewrite)})};
		}

		const {history: _history, ...config} = read((document['config'] as Descriptor).digest);
		return {...descriptor, ...write({...document, config: {...(document['config'] as Descriptor), ...write(config)}})};
	};

	const index = JSON.parse(fs.readFileSync(path.join(target, 'index.json'), 'utf8')) as {manifests: Descriptor[]};
	fs.writeFileSync(path.join(target, 'index.json'), JSON.stringify({...index, manifests: index.manifests.map(rewrite)}));
	return target;
};

test('buildah: a base whose config has no history never hits the layer cache (why buildah warns about such bases)', async t => {
	if (await skipped(t, 'buildah')) {
		return;
	}

	const cachedRun = async (base: string, name: string): Promise<{cached: boolean; warnings: number}> => {
		const project = makeContext(path.join(work, `history-${name}`), {Dockerfile: 'FROM busybox\nRUN echo hi > /x\n'});
		let cached = false;
		let warnings = 0;
		for (const round of [1, 2]) {
			const result = await exobuild(['build', '--engine', 'buildah', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${base}`,
				'--output', `type=oci,dest=${path.join(work, `history-${name}-${round}.tar`)}`, project]);
			assert.equal(result.exitCode, 0, failure(result));
			cached = /^#\d+ CACHED$/m.test(String(result.all));
			warnings = String(result.stderr).split('\n').filter(line => line.includes('layer cache cannot match steps on base busybox')).length;
		}

		return {cached, warnings};
	};

	assert.deepEqual(await cachedRun(layout, 'kept'), {cached: true, warnings: 0}, 'with history, the second build takes RUN from the cache, and nothing is said');
	assert.deepEqual(await cachedRun(withoutHistory(layout, path.join(work, 'busybox-no-history')), 'none'), {cached: false, warnings: 1}, 'without history, it runs RUN again, and says why once per build');
	await assertNothingLeft();
});

test('what each engine cannot do, and what is not supported, is refused before boot with the flag named and why', async () => {
	const refused = async (args: string[], pattern: RegExp, code: number): Promise<void> => {
		// On a builder without BuildKit (the e2e environment otherwise gives it BuildKit from ../shared/upstream).
		const result = await exobuild(['build', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`, ...args, context], {env: {EXO_TEST_SECRET: 'x', EXOBUILD_BUILDKIT: 'none', EXOBUILD_BINFMT: 'none'}});
		assert.equal(result.exitCode, code, result.all);
		assert.match(String(result.stderr), pattern);
		assert.match(String(result.stderr), /\nhint: /);
	};

	await refused(['--engine', 'buildah', '--no-cache-filter', 'base'], /--no-cache-filter: buildah cannot skip the cache for some stages only/, 2);
	await refused(['--engine', 'buildah', '--sbom', 'true'], /--sbom: buildah makes no SBOM attestations/, 2);
	await refused(['--engine', 'buildah', '--provenance', 'mode=max'], /--provenance: buildah makes no provenance attestations/, 2);
	await refused(['--engine', 'buildah', '--progress', 'rawjson'], /--progress rawjson: buildah has no machine-readable progress/, 2);
	await refused(['--engine', 'buildah', '--cache-from', `type=local,src=${work}`], /--cache-from: buildah keeps its cache as image storage/, 2);
	await refused(['--engine', 'buildkit', '--sbom', 'true'], /--sbom: BuildKit makes SBOMs by running the docker\/buildkit-syft-scanner image, which it must pull from a registry/, 2);
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
