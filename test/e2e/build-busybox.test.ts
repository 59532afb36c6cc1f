/**
 * Real builds of a busybox-based Dockerfile under emulation, through the CLI, in the
 * linux-userns sandbox: the exported archive, the host's binfmt table and what is left behind.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {inspectArchive} from '../../src/oci/index.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, exobuild, failure, fixturesDir, hostBinfmtSnapshot, makeContext} from './helpers.js';

const platforms = ['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/arm64'];
const unames: Record<string, string> = {'linux/ppc64le': 'ppc64le', 'linux/s390x': 's390x', 'linux/riscv64': 'riscv64', 'linux/arm64': 'aarch64', 'linux/amd64': 'x86_64'};
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-e2e-'));
let layout: string;
let binfmtBefore: string;

before(async () => {
	layout = await busyboxLayout([...platforms, 'linux/amd64'], path.join(fixturesDir, 'busybox'));
	binfmtBefore = hostBinfmtSnapshot();
});
after(() => fs.rmSync(work, {recursive: true, force: true}));

const context = makeContext(path.join(work, 'ctx'), {
	'Dockerfile': [
		'FROM busybox AS build',
		'ARG TARGETARCH',
		'ARG GREETING=unset',
		'ARG FROM_ENV=unset',
		'RUN uname -m > /uname.txt && echo "$TARGETARCH" > /targetarch.txt && echo "$GREETING" > /greeting.txt && echo "$FROM_ENV" > /from-env.txt',
		'COPY . /ctx/',
		'RUN ls /ctx > /ctx-listing.txt',
		'FROM busybox',
		'COPY --from=build /uname.txt /targetarch.txt /greeting.txt /from-env.txt /ctx-listing.txt /',
		'',
	].join('\n'),
	'.dockerignore': 'ignored.txt\n',
	'ignored.txt': 'must not reach the image\n',
	'kept.txt': 'kept\n',
});

test('one invocation builds four foreign platforms; each image ran its RUN steps on its own architecture', async () => {
	const dest = path.join(work, 'multi.oci.tar');
	const result = await exobuild([
		'build', '--progress', 'plain', '--platform', platforms.slice(0, 2).join(','), '--platform', platforms.slice(2).join(','),
		'--build-context', `busybox=oci-layout://${layout}`, '--build-arg', 'GREETING=hi there', '--build-arg', 'FROM_ENV',
		'-t', 'e2e/multi:1', '-t', 'e2e/multi:latest', '--output', `type=oci,dest=${dest}`, context,
	], {env: {FROM_ENV: 'from the environment'}});
	assert.equal(result.exitCode, 0, failure(result));
	assert.match(String(result.stdout).trim(), /^sha256:[a-f0-9]{64}$/);
	// Progress hygiene (BuildKit, the default engine here): no engine daemon or client log line, no
	// goroutine stack from buildkitd's stop, and no step line printed twice (once as BuildKit's own
	// line under the time prefix, once again as exobuild's step line). BuildKit itself announces a
	// vertex again when its output resumes after another's: that is its format, not a duplicate.
	const raw = String(result.stderr).split('\n');
	const progress = raw.map(line => line.replace(/^#\s+\d+(?:\.\d+)?s /, ''));
	assert.match(String(result.stderr), /engine buildkit/, 'BuildKit built it');
	assert.deepEqual(progress.filter(line => /level=|goroutine |forcing shutdown/.test(line)), [], 'no daemon or client log lines');
	assert.ok(progress.filter(line => /^#\d+ \[linux\//.test(line)).length >= 8, `the steps are shown:\n${result.stderr}`);
	assert.deepEqual(raw.filter(line => /^#\d+ \[/.test(line)), [], 'each step line comes once, as BuildKit printed it');
	assert.deepEqual(progress.filter((line, index) => line !== '' && line === progress[index - 1]), [], 'no line repeated at once');

	const archive = await inspectArchive(dest);
	assert.equal(archive.kind, 'index', 'several platforms give an image index');
	assert.deepEqual(archive.tags.sort(), ['docker.io/e2e/multi:1', 'docker.io/e2e/multi:latest'], 'tags as containerd names them');
	assert.deepEqual(archive.images.map(image => image.platform).sort(), [...platforms].sort());
	for (const image of archive.images) {
		const read = async (file: string): Promise<string> => (await image.readFile(file))?.toString('utf8').trim() ?? `<no ${file}>`;
		assert.equal(image.config.architecture, image.platform.split('/')[1]);
		assert.equal(await read('/uname.txt'), unames[image.platform], image.platform);
		assert.equal(await read('/targetarch.txt'), image.platform.split('/')[1]);
		assert.equal(await read('/greeting.txt'), 'hi there');
		assert.equal(await read('/from-env.txt'), 'from the environment');
		const listing = (await read('/ctx-listing.txt')).split('\n');
		assert.ok(listing.includes('kept.txt'), listing.join(','));
		assert.ok(!listing.includes('ignored.txt'), '.dockerignore is honoured');
	}

	assert.match(String(result.stderr), /linux\/ppc64le: qemu-ppc64le .*proof: uname -m = ppc64le/);
	assert.equal(hostBinfmtSnapshot(), binfmtBefore, 'host binfmt_misc unchanged');
	await assertNothingLeft();
});

test('one platform gives a single manifest; the native platform needs no handler', async () => {
	const dest = path.join(work, 'single.oci.tar');
	const result = await exobuild(['build', '--progress', 'plain', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`, '--output', `type=oci,dest=${dest}`, context]);
	assert.equal(result.exitCode, 0, failure(result));
	const archive = await inspectArchive(dest);
	assert.equal(archive.kind, 'manifest');
	assert.equal(archive.images.length, 1);
	assert.equal((await archive.images[0]!.readFile('/uname.txt'))?.toString().trim(), 'x86_64');
	assert.match(String(result.stderr), /linux\/amd64: native/);
	assert.equal(hostBinfmtSnapshot(), binfmtBefore);
	await assertNothingLeft();
});

test('a failing RUN step exits 1 with the cause, and an existing output file is left as it was', async () => {
	const dest = path.join(work, 'existing.tar');
	fs.writeFileSync(dest, 'previous content');
	const failing = makeContext(path.join(work, 'failing'), {Dockerfile: 'FROM busybox\nRUN echo about to fail && exit 3\n'});
	const result = await exobuild(['build', '--progress', 'plain', '--platform', 'linux/s390x', '--build-context', `busybox=oci-layout://${layout}`, '--output', `type=oci,dest=${dest}`, failing]);
	assert.equal(result.exitCode, 1, result.all);
	assert.match(String(result.stderr), /about to fail/);
	assert.match(String(result.stderr), /^exobuild: .*$/m);
	assert.match(String(result.stderr), /^hint: /m);
	assert.equal(fs.readFileSync(dest, 'utf8'), 'previous content');
	assert.deepEqual(fs.readdirSync(work).filter(name => name.includes('partial')), []);
	assert.equal(hostBinfmtSnapshot(), binfmtBefore);
	await assertNothingLeft();
});

test('a layout that does not serve a requested platform is refused before anything starts', async () => {
	const result = await exobuild(['build', '--platform', 'linux/arm/v7', '--build-context', `busybox=oci-layout://${layout}`, context]);
	assert.equal(result.exitCode, 2, result.all);
	assert.match(String(result.stderr), /linux\/arm\/v7/);
	assert.match(String(result.stderr), /^hint: /m);
	await assertNothingLeft();
});
