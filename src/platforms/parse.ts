import {z} from 'zod';
import {UserError} from '../errors.js';
import {architectures, type Architecture} from './table.js';

/** A normalised target platform, e.g. linux/arm/v7. Only linux is supported. */
export interface Platform {
	readonly os: 'linux';
	readonly architecture: string;
	readonly variant?: string;
	/** The canonical `os/arch[/variant]` spelling. */
	readonly id: string;
	readonly arch: Architecture;
}

export const platformId = (arch: Architecture): string =>
	arch.variant === undefined ? `linux/${arch.oci}` : `linux/${arch.oci}/${arch.variant}`;

export const supportedPlatformIds = (): string[] => architectures.map(platformId);

const byName = new Map<string, Architecture>();
for (const arch of architectures) {
	for (const name of [arch.oci, arch.qemu, arch.debian, ...arch.aliases]) {
		byName.set(name.toLowerCase(), arch);
	}
	if (arch.variant !== undefined) {
		byName.set(`${arch.oci}/${arch.variant}`, arch);
	}
}

const platformToken = z
	.string()
	.trim()
	.min(1)
	.regex(/^[A-Za-z0-9_./-]+$/, 'only letters, digits and . _ - / are allowed');

const toPlatform = (arch: Architecture): Platform => ({
	os: 'linux',
	architecture: arch.oci,
	...(arch.variant === undefined ? {} : {variant: arch.variant}),
	id: platformId(arch),
	arch,
});

const unknownPlatform = (value: string, why: string): UserError =>
	new UserError(`unknown platform "${value}": ${why}`, {
		hint: `supported platforms: ${supportedPlatformIds().join(', ')}`,
		code: 'E_PLATFORM',
	});

/** Parses one platform spelling: `os/arch[/variant]`, `arch[/variant]`, or an alias (x86_64, aarch64, armhf, ppc64el, i386…). */
export const parsePlatform = (value: string): Platform => {
	const parsed = platformToken.safeParse(value);
	if (!parsed.success) {
		throw unknownPlatform(value, parsed.error.issues[0]?.message ?? 'malformed');
	}

	const parts = parsed.data.toLowerCase().split('/');
	if (parts.some(part => part === '')) {
		throw unknownPlatform(value, 'empty component');
	}

	let rest = parts;
	if (parts.length > 1 && !byName.has(parts.slice(0, 2).join('/')) && !byName.has(parts[0]!)) {
		const [os, ...tail] = parts;
		if (os !== 'linux') {
			throw unknownPlatform(value, `operating system "${os}" is not supported (only linux)`);
		}

		rest = tail;
	}

	if (rest.length === 0 || rest.length > 2) {
		throw unknownPlatform(value, 'expected os/arch[/variant]');
	}

	const [name, variant] = rest as [string, string | undefined];
	const arch = byName.get(name);
	if (arch === undefined) {
		throw unknownPlatform(value, `architecture "${name}" is not supported`);
	}

	if (variant !== undefined) {
		const allowed = arch.variant ?? (arch.oci === 'arm64' ? 'v8' : undefined);
		if (variant !== allowed) {
			throw unknownPlatform(value, `variant "${variant}" of ${arch.oci} is not supported`);
		}
	}

	return toPlatform(arch);
};

/**
 * Parses repeated and comma-separated platform values (`--platform a,b --platform c`) into a
 * de-duplicated list in first-seen order.
 */
export const parsePlatforms = (values: readonly string[]): Platform[] => {
	const seen = new Map<string, Platform>();
	for (const value of values) {
		for (const item of value.split(',')) {
			if (item.trim() === '') {
				throw unknownPlatform(value, 'empty entry in comma list');
			}

			const platform = parsePlatform(item);
			if (!seen.has(platform.id)) {
				seen.set(platform.id, platform);
			}
		}
	}

	return [...seen.values()];
};

/** The platform of the machine exobuild runs on (Node's process.arch), if it is one in the table. */
export const hostPlatform = (nodeArch: string = process.arch): Platform | undefined => {
	const names: Record<string, string> = {x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64'};
	const name = names[nodeArch];
	return name === undefined ? undefined : parsePlatform(name);
};

/** The binfmt_misc registration parameters for an architecture (flags are chosen by the agent). */
export const handlerSpec = (arch: Architecture): string => `qemu-${arch.qemu}:${arch.magic}:${arch.mask}`;
