/**
 * The acceptance build: a multi-stage Dockerfile that installs a Debian package with
 * apt-get under emulation, for three foreign platforms in one invocation.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {inspectArchive} from '../../src/oci/index.js';
import {debianLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, elfMachine, exobuild, failure, fixturesDir, hostBinfmtSnapshot, makeContext} from './helpers.js';

const platforms = ['linux/ppc64le', 'linux/s390x', 'linux/arm64'];
// ELF e_machine: EM_PPC64 21, EM_S390 22, EM_AARCH64 183
const machines: Record<string, number> = {'linux/ppc64le': 21, 'linux/s390x': 22, 'linux/arm64': 183};
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-apt-'));
let layout: string;
before(async () => {
	layout = await debianLayout(platforms, path.join(fixturesDir, 'debian'));
});
after(() => fs.rmSync(work, {recursive: true, force: true}));

test('apt-get install under emulation in a multi-stage build, for ppc64le, s390x and arm64 at once', async () => {
	const binfmtBefore = hostBinfmtSnapshot();
	const context = makeContext(path.join(work, 'ctx'), {
		Dockerfile: [
			'FROM debian:stable AS build',
			'RUN apt-get update && apt-get install -y --no-install-recommends hello && hello > /greeting.txt && dpkg --print-architecture > /dpkg-arch.txt',
			'FROM debian:stable',
			'COPY --from=build /usr/bin/hello /usr/local/bin/hello',
			'COPY --from=build /greeting.txt /dpkg-arch.txt /',
			'',
		].join('\n'),
	});
	const dest = path.join(work, 'apt.oci.tar');
	const result = await exobuild(['build', '--progress', 'plain', '--platform', platforms.join(','), '--build-context', `debian:stable=oci-layout://${layout}`, '-t', 'e2e/hello:1', '--output', `type=oci,dest=${dest}`, context]);
	assert.equal(result.exitCode, 0, failure(result));

	const archive = await inspectArchive(dest);
	assert.deepEqual(archive.images.map(image => image.platform).sort(), [...platforms].sort());
	const debianArch: Record<string, string> = {'linux/ppc64le': 'ppc64el', 'linux/s390x': 's390x', 'linux/arm64': 'arm64'};
	for (const image of archive.images) {
		assert.equal((await image.readFile('/greeting.txt'))?.toString().trim(), 'Hello, world!', image.platform);
		assert.equal((await image.readFile('/dpkg-arch.txt'))?.toString().trim(), debianArch[image.platform]);
		const hello = await image.readFile('/usr/local/bin/hello');
		assert.ok(hello, 'hello was copied from the build stage');
		assert.equal(elfMachine(hello), machines[image.platform], `${image.platform}: hello is a binary of that architecture`);
	}

	assert.equal(hostBinfmtSnapshot(), binfmtBefore);
	await assertNothingLeft();
});
