/**
 * The one place that pins the upstream tools the distro builder image can carry.
 *
 * BuildKit: the official moby/buildkit release tarballs
 * (https://github.com/moby/buildkit/releases/tag/v0.32.2), `buildkit-v0.32.2.linux-ARCH.tar.gz`,
 * each holding `bin/buildkitd` and `bin/buildctl` (plus buildkit-runc and buildkit-qemu-*,
 * which exobuild does not take: Debian's runc and qemu-user-static serve).
 *
 * Verification status: the release publishes a `.sha256` file per tarball, which could not be
 * read from here (no network to github.com on the machine this was written on). The SHA-256
 * values below come from third-party public repositories that download these exact URLs
 * (amd64: several independent download scripts agree; arm64: one), so they are marked
 * UNVERIFIED: a download is still checked against them (a mismatch is refused), but they have
 * not been compared with the official `.sha256` files. Whoever confirms one changes its
 * `status` to 'verified' and says where in docs/buildkit.md. Host architectures without a pin
 * get no automatic download: pass `--buildkit FILE|URL --buildkit-sha256 HEX`.
 *
 * tonistiigi/binfmt publishes container images (docker.io/tonistiigi/binfmt), not release
 * tarballs, so there is nothing to pin or download: `--binfmt FILE|URL` is its only source.
 */

export type PinStatus = 'verified' | 'unverified';

export interface ReleasePin {
	readonly version: string;
	/** The release's name for the architecture (`arm-v7`, not `arm`). */
	readonly releaseArch: string;
	readonly url: string;
	/** Expected SHA-256, 64 lowercase hex digits. */
	readonly sha256: string;
	readonly status: PinStatus;
	/** Where the digest was taken from. */
	readonly source: string;
}

export const buildkitVersion = 'v0.32.2';

export const buildkitReleaseUrl = (releaseArch: string): string =>
	`https://github.com/moby/buildkit/releases/download/${buildkitVersion}/buildkit-${buildkitVersion}.linux-${releaseArch}.tar.gz`;

/** OCI architecture (as builderArchitecture() names the host) → the release's architecture name. */
const releaseArchOf: Readonly<Record<string, string>> = {
	amd64: 'amd64', arm64: 'arm64', arm: 'arm-v7', ppc64le: 'ppc64le', s390x: 's390x', riscv64: 'riscv64',
};

const thirdParty = 'third-party download scripts in public repositories (found by code search); not compared with the official .sha256';

/** SHA-256 of the official tarballs, by OCI architecture. Only these are downloaded without --buildkit-sha256. */
const buildkitDigests: Readonly<Record<string, {sha256: string; status: PinStatus; source: string}>> = {
	amd64: {sha256: '2975d0f651ad96ba8b80b9992ae1f9a964f4408569af5b6dc36544165c3926af', status: 'unverified', source: thirdParty},
	arm64: {sha256: '9e8f46bf309ec0ab262967be5538a4dbe06be756a82621f98253933bac5dcf92', status: 'unverified', source: thirdParty},
};

/** The pinned official BuildKit release for an OCI architecture, or undefined when none is pinned (or the release has no build for it). */
export const buildkitPin = (architecture: string): ReleasePin | undefined => {
	const releaseArch = releaseArchOf[architecture];
	const digest = buildkitDigests[architecture];
	if (releaseArch === undefined || digest === undefined) {
		return undefined;
	}

	return {version: buildkitVersion, releaseArch, url: buildkitReleaseUrl(releaseArch), ...digest};
};

/** The official release URL for an architecture (pinned or not): what a user would download and pass with its SHA-256. */
export const buildkitUrlFor = (architecture: string): string | undefined => {
	const releaseArch = releaseArchOf[architecture];
	return releaseArch === undefined ? undefined : buildkitReleaseUrl(releaseArch);
};

/** Every pin, for the docs and tests. */
export const buildkitPins = (): ReleasePin[] => Object.keys(buildkitDigests).map(arch => buildkitPin(arch)!);
