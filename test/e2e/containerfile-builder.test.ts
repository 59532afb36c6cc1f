/**
 * Containerfile.builder built for real on Linux (issue 11): `exobuild builder build --recipe
 * containerfile` runs BuildKit in a linux-userns sandbox (booted from the distro builder made
 * with BuildKit) over stand-ins for the three images the recipe pins, each served from an OCI
 * layout with `--base-image` (test/fixtures/standin-images.ts: Debian for ubuntu:24.04,
 * upstream bin/binfmt + Debian's QEMU, upstream buildkitd/buildctl). The result is saved, loaded
 * into a fresh cache with `builder load`, and builds examples/hello for three foreign platforms
 * with BuildKit. Skipped, with the reason, without this setup's ../shared/upstream.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import * as tar from 'tar';
import {containerfileHash} from '../../src/builder-image/identity.js';
import {inspectArchive} from '../../src/oci/index.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {standinImages} from '../fixtures/standin-images.js';
import {assertNothingLeft, exobuild, failure, fixturesDir, hostBinfmtSnapshot, repoRoot, upstreamTarballs} from './helpers.js';

const tarballs = upstreamTarballs();
const skip = 'skip' in tarballs ? tarballs.skip : false;
const platforms = ['linux/ppc64le', 'linux/s390x', 'linux/riscv64'] as const;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-cfb-'));
after(() => fs.rmSync(work, {recursive: true, force: true}));

interface Described {
	reference: string;
	kind: string;
	inputHash: string;
	current?: boolean;
	engines: string[];
	baseOverrides?: Record<string, string>;
}

/** The containerfile builder made in the shared e2e cache: removed even when the test fails half-way. */
let madeReference: string | undefined;
after(async () => {
	if (madeReference !== undefined) {
		await exobuild(['builder', 'rm', madeReference]);
	}
});

const sha256Of = (data: Buffer): string => crypto.createHash('sha256').update(data).digest('hex');

/** A member of an upstream tarball, as bytes. */
const memberOf = async (tarball: string, member: string): Promise<Buffer> => {
	const chunks: Buffer[] = [];
	await tar.t({file: tarball, filter: entry => entry.replace(/^\.\//, '') === member, onReadEntry: entry => entry.on('data', (chunk: Buffer) => chunks.push(chunk))});
	assert.ok(chunks.length > 0, `${member} is in ${tarball}`);
	return Buffer.concat(chunks);
};

test('builder build --recipe containerfile with stand-ins: builder load takes it in a fresh cache, and it builds the demo for three platforms with BuildKit', {skip}, async () => {
	if ('skip' in tarballs) {
		return;
	}

	const standins = await standinImages(path.join(fixturesDir, 'standins'), tarballs);
	const busybox = await busyboxLayout([...platforms], path.join(fixturesDir, 'busybox'));
	const binfmtBefore = hostBinfmtSnapshot();

	// Unknown names are refused before anything starts, naming the ones there are.
	const unknown = await exobuild(['builder', 'build', '--recipe', 'containerfile', '--base-image', `debian=oci-layout://${standins.ubuntu}`]);
	assert.equal(unknown.exitCode, 2, unknown.all);
	assert.match(String(unknown.stderr), /--base-image debian: Containerfile.builder pins no base of that name\nhint: name one of: ubuntu, binfmt, buildkit$/);

	// The BuildKit distro builder it is built in (exobuildEnv names the upstream tarballs): made, or found.
	const distro = await exobuild(['builder', 'build']);
	assert.equal(distro.exitCode, 0, failure(distro));
	assert.ok((JSON.parse(String(distro.stdout)) as Described).engines.includes('buildkit'), 'the distro builder has BuildKit');

	const made = await exobuild([
		'builder', 'build', '--recipe', 'containerfile', '--force',
		'--base-image', `ubuntu=oci-layout://${standins.ubuntu}`,
		'--base-image', `binfmt=oci-layout://${standins.binfmt}`,
		'--base-image', `buildkit=oci-layout://${standins.buildkit}`,
	]);
	assert.equal(made.exitCode, 0, failure(made));
	const builder = JSON.parse(String(made.stdout)) as Described;
	madeReference = builder.reference;
	assert.equal(builder.kind, 'containerfile');
	assert.equal(builder.inputHash, await containerfileHash(), 'labelled with this checkout\'s Containerfile.builder hash');
	assert.deepEqual(Object.keys(builder.baseOverrides ?? {}).sort(), ['binfmt', 'buildkit', 'ubuntu'], 'it records that stand-ins were used');
	assert.match(String(made.stderr), /Build Containerfile\.builder: .*built linux\/amd64 with buildkit/, 'built by BuildKit in the sandbox');
	const listed = await exobuild(['builder', 'ls']);
	assert.match(String(listed.stdout), new RegExp(`${builder.reference}\\tcontainerfile\\t.*\\tstand-ins: binfmt,buildkit,ubuntu(?:\\n|$)`, 'm'));

	const archive = path.join(work, 'containerfile-builder.tar');
	const saved = await exobuild(['builder', 'save', builder.reference, '-o', archive]);
	assert.equal(saved.exitCode, 0, failure(saved));
	// Out of the shared e2e cache again: a stored containerfile builder is what later builds would pick.
	const removed = await exobuild(['builder', 'rm', builder.reference]);
	assert.equal(removed.exitCode, 0, failure(removed));

	// What the stand-ins put in: the upstream buildkitd and binfmt, byte for byte, and the stamped agent.
	const [image] = (await inspectArchive(archive)).images;
	assert.ok(image);
	assert.equal(sha256Of((await image.readFile('/usr/bin/buildkitd'))!), sha256Of(await memberOf(tarballs.buildkit, 'bin/buildkitd')));
	assert.equal(sha256Of((await image.readFile('/usr/bin/binfmt'))!), sha256Of(await memberOf(tarballs.binfmt, 'bin/binfmt')));
	assert.ok((await image.readFile('/usr/bin/buildkit-runc')) !== undefined, 'buildkit-runc copied from the buildkit image');
	const version = (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {version: string}).version;
	assert.match((await image.readFile('/usr/local/bin/exobuild-agent'))!.toString('utf8'), new RegExp(`^AGENT_VERSION=${version.replaceAll('.', '\\.')}$`, 'm'));

	// A fresh cache that has only what `builder load` takes.
	const fresh = {EXOBUILD_CACHE_DIR: path.join(work, 'fresh-cache'), EXOBUILD_BUILDKIT: '', EXOBUILD_BINFMT: ''};
	const loaded = await exobuild(['builder', 'load', '-i', archive], {env: fresh});
	assert.equal(loaded.exitCode, 0, failure(loaded));
	const stored = JSON.parse(String(loaded.stdout)) as Described;
	assert.equal(stored.current, true, 'builder load accepts it as current for this checkout');
	assert.deepEqual(stored.baseOverrides, builder.baseOverrides);
	assert.equal(String(loaded.stderr), '', 'no warning');

	const dest = path.join(work, 'hello.oci.tar');
	const built = await exobuild([
		'build', '--progress', 'plain', '--platform', platforms.join(','), '--build-context', `busybox=oci-layout://${busybox}`,
		'-o', `type=oci,dest=${dest}`, path.join(repoRoot, 'examples', 'hello'),
	], {env: fresh});
	assert.equal(built.exitCode, 0, failure(built));
	assert.match(String(built.stderr), new RegExp(`Builder image: done in [\\d.]+s \\(${builder.inputHash.slice(0, 12)}\\)`), 'the loaded containerfile builder ran the build');
	assert.match(String(built.stderr), /built linux\/ppc64le, linux\/s390x, linux\/riscv64 with buildkit: sha256:/);
	const hello = await inspectArchive(dest);
	assert.deepEqual(hello.images.map(each => each.platform).sort(), [...platforms].sort());
	for (const each of hello.images) {
		const arch = each.platform.split('/')[1]!;
		const report = (await each.readFile('/report.txt'))?.toString('utf8').trim();
		assert.match(report ?? '<no /report.txt>', new RegExp(`^hello from ${arch} \\(TARGETPLATFORM=${each.platform}, TARGETARCH=${arch}\\), Linux `), each.platform);
		assert.equal(each.config.architecture, arch);
	}

	assert.equal(hostBinfmtSnapshot(), binfmtBefore, 'host binfmt_misc unchanged');
	const freshRuns = path.join(fresh.EXOBUILD_CACHE_DIR, 'runs');
	assert.deepEqual(fs.existsSync(freshRuns) ? fs.readdirSync(freshRuns) : [], [], 'no run folder left in the fresh cache');
	await assertNothingLeft();
});
