/**
 * What `exobuild doctor` says about the Mac under the apple-container driver: the macOS version,
 * the chip, and what each VM option (--virtualization, --rosetta) needs. The readers call
 * sw_vers/sysctl and never throw; the row makers are pure (unit-tested).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import {execa} from 'execa';
import type {CheckRow} from '../driver.js';

export interface MacHost {
	/** `sw_vers -productVersion`, e.g. "15.2"; undefined off macOS or if unreadable. */
	readonly macos: string | undefined;
	/** `sysctl -n machdep.cpu.brand_string`, e.g. "Apple M3 Pro". */
	readonly chip: string | undefined;
	/** hw.optional.arm64 (true also for a Node running under Rosetta). */
	readonly appleSilicon: boolean | undefined;
	/** Rosetta 2's driver is installed. */
	readonly rosettaInstalled: boolean | undefined;
}

const output = async (command: string, args: readonly string[]): Promise<string | undefined> => {
	const result = await execa(command, args, {reject: false, stdin: 'ignore'}).catch(() => undefined);
	return result?.exitCode === 0 && String(result.stdout).trim() !== '' ? String(result.stdout).trim() : undefined;
};

export const readMacHost = async (): Promise<MacHost> => {
	if (process.platform !== 'darwin') {
		return {macos: undefined, chip: undefined, appleSilicon: undefined, rosettaInstalled: undefined};
	}

	const [macos, chip, arm64] = await Promise.all([
		output('sw_vers', ['-productVersion']),
		output('sysctl', ['-n', 'machdep.cpu.brand_string']),
		output('sysctl', ['-n', 'hw.optional.arm64']),
	]);
	const rosettaInstalled = await fs.access('/Library/Apple/usr/libexec/oah/libRosettaRuntime').then(() => true, () => false);
	return {macos, chip, appleSilicon: arm64 === undefined ? process.arch === 'arm64' : arm64 === '1', rosettaInstalled};
};

/** M1 → 1, "Apple M3 Pro" → 3; undefined for Intel or an unknown brand. */
export const appleChipGeneration = (chip: string | undefined): number | undefined => {
	const match = /\bApple M(\d+)\b/.exec(chip ?? '');
	return match ? Number(match[1]) : undefined;
};

/** "15.2" → 15; without sw_vers, from Darwin's release (Darwin 24 is macOS 15, 25 is macOS 26). */
export const macosMajor = (version: string | undefined, darwinRelease: string = os.release()): number | undefined => {
	if (version !== undefined) {
		const major = Number(version.split('.')[0]);
		return Number.isFinite(major) ? major : undefined;
	}

	const darwin = Number(darwinRelease.split('.')[0]);
	return Number.isFinite(darwin) && darwin >= 20 ? (darwin >= 25 ? darwin + 1 : darwin - 9) : undefined;
};

const notAMac = 'not a Mac (the container CLI is EXOBUILD_CONTAINER_CLI): nothing to check';

/**
 * --virtualization: an M3 or later, macOS 15+, and a kernel with KVM (the VM's default kernel
 * has none). QEMU user emulation never needs it, so a Mac without it is fine unless it is asked for.
 */
export const virtualizationRow = (host: MacHost, requested: boolean, onMac: boolean = process.platform === 'darwin'): CheckRow => {
	const check = '--virtualization';
	if (!onMac) {
		return {area: 'vm', check, status: 'ok', detail: notAMac};
	}

	const generation = appleChipGeneration(host.chip);
	const major = macosMajor(host.macos);
	const missing = [
		...(generation !== undefined && generation >= 3 ? [] : [`an M3 or later chip (this is ${host.chip ?? 'an unknown chip'})`]),
		...(major !== undefined && major >= 15 ? [] : [`macOS 15 or later (this is ${host.macos ?? 'an unknown version'})`]),
	];
	const kernel = 'a kernel with KVM (the default kernel has none)';
	const unneeded = 'QEMU user emulation does not need it';
	if (missing.length === 0) {
		return {area: 'vm', check, status: 'ok', detail: `possible here with ${kernel}; ${unneeded}`};
	}

	const detail = `not available: needs ${missing.join(' and ')}, and ${kernel}; ${unneeded}`;
	return requested
		? {area: 'vm', check, status: 'fail', detail, fix: 'drop --virtualization: QEMU user emulation does not need it'}
		: {area: 'vm', check, status: 'ok', detail};
};

/** --rosetta: Apple silicon with Rosetta 2 installed; it runs linux/amd64 faster than QEMU. */
export const rosettaRow = (host: MacHost, requested: boolean, onMac: boolean = process.platform === 'darwin'): CheckRow => {
	const check = '--rosetta';
	if (!onMac) {
		return {area: 'vm', check, status: 'ok', detail: notAMac};
	}

	if (host.appleSilicon === false) {
		const detail = `not available: needs Apple silicon (this is ${host.chip ?? 'an Intel Mac'}); linux/amd64 runs natively here anyway`;
		return requested ? {area: 'vm', check, status: 'fail', detail, fix: 'drop --rosetta'} : {area: 'vm', check, status: 'ok', detail};
	}

	if (host.rosettaInstalled === false) {
		return {
			area: 'vm', check, status: requested ? 'fail' : 'warn',
			detail: 'Rosetta 2 is not installed: linux/amd64 falls back to QEMU (slower)',
			fix: 'softwareupdate --install-rosetta --agree-to-license',
		};
	}

	return {area: 'vm', check, status: 'ok', detail: `available (${host.chip ?? 'Apple silicon'}): --rosetta runs linux/amd64 faster than QEMU`};
};
