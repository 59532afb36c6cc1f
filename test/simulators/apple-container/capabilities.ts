/**
 * Linux capabilities as `container run --cap-add/--cap-drop` takes them (CAP_X, X or ALL), and the
 * default set a container gets from 0.12 on (before: every capability). The default list is the
 * OCI/Docker one that containerization's defaultOCICapabilities mirrors (UNVERIFIED in detail).
 */
import {CliError} from './state.js';

export const allCapabilities = [
	'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP', 'LINUX_IMMUTABLE',
	'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW', 'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT',
	'SYS_PTRACE', 'SYS_PACCT', 'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD', 'LEASE',
	'AUDIT_WRITE', 'AUDIT_CONTROL', 'SETFCAP', 'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG', 'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ',
	'PERFMON', 'BPF', 'CHECKPOINT_RESTORE',
] as const;

export const defaultCapabilities: readonly string[] = [
	'AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD', 'NET_BIND_SERVICE', 'NET_RAW', 'SETFCAP', 'SETGID',
	'SETPCAP', 'SETUID', 'SYS_CHROOT',
];

const normalise = (cap: string): string => {
	const name = cap.trim().toUpperCase().replace(/^CAP_/, '');
	if (name !== 'ALL' && !(allCapabilities as readonly string[]).includes(name)) {
		throw new CliError(`invalidArgument: "unknown capability: ${cap}"`);
	}

	return name;
};

/** The capabilities a container ends up with: defaults, plus adds, minus drops (drops win). */
export const effectiveCapabilities = (adds: readonly string[], drops: readonly string[], base: readonly string[] = defaultCapabilities): string[] => {
	const set = new Set(base);
	for (const cap of adds.map(normalise)) {
		for (const each of cap === 'ALL' ? allCapabilities : [cap]) {
			set.add(each);
		}
	}

	for (const cap of drops.map(normalise)) {
		for (const each of cap === 'ALL' ? allCapabilities : [cap]) {
			set.delete(each);
		}
	}

	return allCapabilities.filter(cap => set.has(cap));
};

/** setpriv's --bounding-set value for a set, or undefined when it is every capability. */
export const boundingSetSpec = (caps: readonly string[]): string | undefined =>
	caps.length === allCapabilities.length ? undefined : ['-all', ...caps.map(cap => `+${cap.toLowerCase()}`)].join(',');
