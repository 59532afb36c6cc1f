import assert from 'node:assert/strict';
import {test} from 'node:test';
import {isUserError} from '../../src/errors.js';
import {handlerSpec, hostPlatform, parsePlatform, parsePlatforms, supportedPlatformIds} from '../../src/platforms/parse.js';
import {architectures} from '../../src/platforms/table.js';

test('canonical ids and aliases normalise to one platform', () => {
	const cases: Array<[string, string]> = [
		['linux/ppc64le', 'linux/ppc64le'],
		['ppc64el', 'linux/ppc64le'],
		['linux/ppc64el', 'linux/ppc64le'],
		['x86_64', 'linux/amd64'],
		['linux/x86_64', 'linux/amd64'],
		['aarch64', 'linux/arm64'],
		['linux/arm64/v8', 'linux/arm64'],
		['armhf', 'linux/arm/v7'],
		['linux/arm', 'linux/arm/v7'],
		['linux/arm/v7', 'linux/arm/v7'],
		['i386', 'linux/386'],
		['LINUX/S390X', 'linux/s390x'],
		[' riscv64 ', 'linux/riscv64'],
	];
	for (const [input, expected] of cases) {
		assert.equal(parsePlatform(input).id, expected, input);
	}
});

test('comma lists and repeated flags are merged in first-seen order without duplicates', () => {
	const platforms = parsePlatforms(['linux/ppc64le,linux/s390x', 'ppc64el', 'riscv64,linux/arm64']);
	assert.deepEqual(platforms.map(p => p.id), ['linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/arm64']);
});

test('unknown or malformed platforms are rejected naming the supported ones', () => {
	for (const bad of ['linux/mips', 'windows/amd64', 'linux/arm/v6', 'linux/amd64/v9', 'linux//amd64', 'a/b/c/d', 'linux/ppc64le;rm', '']) {
		assert.throws(() => parsePlatforms([bad]), (error: unknown) => {
			assert.ok(isUserError(error), `${bad}: ${String(error)}`);
			assert.match(error.hint ?? '', /linux\/ppc64le/);
			assert.equal(error.code, 'E_PLATFORM');
			return true;
		}, bad);
	}

	assert.throws(() => parsePlatforms(['linux/ppc64le,']), /empty entry/);
});

test('every architecture in the table has a consistent binfmt entry', () => {
	assert.equal(supportedPlatformIds().length, architectures.length);
	for (const arch of architectures) {
		const magic = arch.magic.split('\\x').slice(1);
		const mask = arch.mask.split('\\x').slice(1);
		assert.equal(arch.magic.startsWith('\\x7fELF'), true, arch.oci);
		assert.equal(magic.length + 3, mask.length, `${arch.oci}: magic has "ELF" as 3 literal bytes`);
		assert.match(handlerSpec(arch), new RegExp(`^qemu-${arch.qemu}:\\\\x7fELF`));
	}
});

test('the host platform is recognised', () => {
	assert.equal(hostPlatform('x64')?.id, 'linux/amd64');
	assert.equal(hostPlatform('arm64')?.id, 'linux/arm64');
	assert.equal(hostPlatform('mips'), undefined);
});
