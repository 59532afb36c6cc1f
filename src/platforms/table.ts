/**
 * The one table of CPU architectures exobuild knows. Everything else (platform parsing,
 * binfmt_misc registration lines, the builder image's emulator and probe lists, error
 * messages naming the supported platforms) is derived from it.
 *
 * Magic/mask pairs are QEMU's (scripts/qemu-binfmt-conf.sh, as shipped in Debian's
 * /usr/lib/binfmt.d/qemu-*.conf), written with the \xHH escapes binfmt_misc itself parses.
 */
export interface Architecture {
	/** OCI `architecture` value. */
	readonly oci: string;
	/** OCI `variant`, when the architecture has one exobuild builds for. */
	readonly variant?: string;
	/** Other spellings accepted on the command line (kernel, Debian, QEMU names). */
	readonly aliases: readonly string[];
	/** QEMU's name: the emulator is `qemu-<qemu>` and the binfmt handler `qemu-<qemu>`. */
	readonly qemu: string;
	/** Debian's architecture name (for packages: emulators' probes, test base images). */
	readonly debian: string;
	/** What `uname -m` prints for a process of this architecture (under QEMU, QEMU's value). */
	readonly unameMachine: string;
	/** binfmt_misc magic and mask, in \xHH form. */
	readonly magic: string;
	readonly mask: string;
}

const elfMask32 = String.raw`\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`;
const x86Mask = String.raw`\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`;

export const architectures: readonly Architecture[] = [
	{
		oci: 'amd64',
		aliases: ['x86_64', 'x86-64', 'x64'],
		qemu: 'x86_64',
		debian: 'amd64',
		unameMachine: 'x86_64',
		magic: String.raw`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00`,
		mask: x86Mask,
	},
	{
		oci: '386',
		aliases: ['i386', 'i686', 'x86'],
		qemu: 'i386',
		debian: 'i386',
		unameMachine: 'i686',
		magic: String.raw`\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00`,
		mask: x86Mask,
	},
	{
		oci: 'arm64',
		aliases: ['aarch64', 'arm64/v8'],
		qemu: 'aarch64',
		debian: 'arm64',
		unameMachine: 'aarch64',
		magic: String.raw`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00`,
		mask: elfMask32,
	},
	{
		oci: 'arm',
		variant: 'v7',
		aliases: ['armhf', 'armv7', 'armv7l', 'arm/v7', 'arm32v7'],
		qemu: 'arm',
		debian: 'armhf',
		unameMachine: 'armv7l',
		magic: String.raw`\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00`,
		mask: elfMask32,
	},
	{
		oci: 'ppc64le',
		aliases: ['ppc64el', 'powerpc64le'],
		qemu: 'ppc64le',
		debian: 'ppc64el',
		unameMachine: 'ppc64le',
		magic: String.raw`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00`,
		mask: String.raw`\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00`,
	},
	{
		oci: 's390x',
		aliases: ['s390'],
		qemu: 's390x',
		debian: 's390x',
		unameMachine: 's390x',
		magic: String.raw`\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16`,
		mask: String.raw`\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff`,
	},
	{
		oci: 'riscv64',
		aliases: ['riscv', 'rv64', 'rv64gc'],
		qemu: 'riscv64',
		debian: 'riscv64',
		unameMachine: 'riscv64',
		magic: String.raw`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00`,
		mask: elfMask32,
	},
];
