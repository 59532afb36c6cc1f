/**
 * The distro builder image as `exobuild builder create` makes it: named by its input hash,
 * holding the agent, a probe binary of every architecture of the platform table, and only the
 * emulators of those architectures.
 */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {inspectArchive} from '../../src/oci/index.js';
import {architectures} from '../../src/platforms/table.js';
import {elfMachine, exobuild} from './helpers.js';

// ELF e_machine of each architecture's binaries.
const machines: Record<string, number> = {x86_64: 62, i386: 3, aarch64: 183, arm: 40, ppc64le: 21, s390x: 22, riscv64: 243};

test('builder create makes (or finds) the image; inspect prints it; its layers hold what the agent needs', async () => {
	const created = await exobuild(['builder', 'create']);
	assert.equal(created.exitCode, 0, created.all);
	const inspected = await exobuild(['builder', 'inspect']);
	assert.equal(inspected.exitCode, 0, inspected.all);
	const image = JSON.parse(String(inspected.stdout)) as {archivePath: string; manifestDigest: string; inputHash: string};
	assert.match(image.archivePath, new RegExp(`${image.inputHash}\\.tar$`));
	assert.deepEqual(JSON.parse(String(created.stdout)), image, 'a second create finds the same image');

	const archive = await inspectArchive(image.archivePath);
	assert.equal(archive.images.length, 1);
	const [builder] = archive.images;
	assert.equal(builder!.manifestDigest, image.manifestDigest);
	const agent = await builder!.readFile('/usr/local/bin/exobuild-agent');
	assert.match(agent?.toString() ?? '', /^#!\/bin\/sh\n/);
	for (const arch of architectures) {
		// eslint-disable-next-line no-await-in-loop
		const probe = await builder!.readFile(`/usr/lib/exobuild/probes/${arch.qemu}/busybox`);
		assert.ok(probe, `probe of ${arch.qemu}`);
		assert.equal(elfMachine(probe), machines[arch.qemu], `probe of ${arch.qemu} is a binary of that architecture`);
		// eslint-disable-next-line no-await-in-loop
		assert.ok(await builder!.readFile(`/usr/bin/qemu-${arch.qemu}`), `emulator qemu-${arch.qemu}`);
	}

	assert.equal(await builder!.readFile('/usr/bin/qemu-mips64el'), undefined, 'emulators outside the table are left out');
	assert.ok(await builder!.readFile('/usr/bin/buildah'), 'the buildah engine');
});
