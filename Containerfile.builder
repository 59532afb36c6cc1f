# exobuild's builder image for macOS (Apple `container`), also usable on Linux via
# `exobuild builder load`: Ubuntu 24.04 + QEMU user emulators + tonistiigi/binfmt + BuildKit +
# the agent. Built with `exobuild builder build` (= `container build -f Containerfile.builder`,
# with --build-arg ARCH_PAIRS derived from src/platforms/table.ts) for the host's platform
# (linux/arm64 on Apple silicon, linux/amd64 on Intel).
#
# Every upstream input is pinned here, by version and digest, and nowhere else. The image's tag
# (exobuild-builder:containerfile-<hash>) is a hash of this file and of vm-image/, so a changed
# pin or agent means a new image. Each digest was copied from public, digest-pinned uses of the
# same tag; none could be pulled on exobuild's CI (no registry). docs/macos.md says how to check.
#
# A `# syntax=` line is deliberately absent: it would make BuildKit pull a frontend image.

# Ubuntu 24.04 (noble), multi-arch index.
ARG UBUNTU_IMAGE=docker.io/library/ubuntu:24.04@sha256:224a1869083a311ef3f13648a154ba79832fbef6364d31493642ca03082da254
# tonistiigi/binfmt qemu-v10.2.3-68: /usr/bin/binfmt and static /usr/bin/qemu-<arch> (QEMU 10.2.3).
ARG BINFMT_IMAGE=docker.io/tonistiigi/binfmt:qemu-v10.2.3-68@sha256:400a4873b838d1b89194d982c45e5fb3cda4593fbfd7e08a02e76b03b21166f0
# BuildKit v0.32.2: buildkitd, buildctl, buildkit-runc, buildkit-qemu-* (last-resort fallbacks).
ARG BUILDKIT_IMAGE=docker.io/moby/buildkit:v0.32.2@sha256:28a898719c18a33f4e8000685287fa36fd0dd9560c6440227d3a732d79bb41d8
# Debian mirror and suites for the probe binaries (static busybox per architecture).
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
ARG DEBIAN_SUITES="trixie stable"

FROM ${BINFMT_IMAGE} AS binfmt
FROM ${BUILDKIT_IMAGE} AS buildkit

FROM ${UBUNTU_IMAGE} AS probes
ARG DEBIAN_MIRROR
ARG DEBIAN_SUITES
# "QEMU_ARCH=DEBIAN_ARCH ..." for every architecture of src/platforms/table.ts; exobuild passes it.
ARG ARCH_PAIRS
RUN test -n "$ARCH_PAIRS" || { echo "ARCH_PAIRS is empty: build this with 'exobuild builder build'" >&2; exit 1; }
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates debian-archive-keyring \
    && rm -rf /var/lib/apt/lists/*
COPY vm-image/debian-download.sh vm-image/make-probes.sh /recipe/
RUN EXOBUILD_DEBIAN_MIRROR="$DEBIAN_MIRROR" EXOBUILD_DEBIAN_SUITES="$DEBIAN_SUITES" \
      /recipe/make-probes.sh /tree /work "$ARCH_PAIRS"

FROM ${UBUNTU_IMAGE}
# qemu-user-static: Ubuntu's emulators at /usr/bin/qemu-<arch>-static, used when binfmt is absent.
# mount, util-linux, procps, mawk: what the agent calls (mount, setpriv, pkill, awk).
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      qemu-user-static ca-certificates mount util-linux procps mawk openssh-client \
    && rm -rf /var/lib/apt/lists/*
# tonistiigi's binfmt next to its own static QEMU (it registers /usr/bin/qemu-<arch>), preferred
# by the agent: newer QEMU than Ubuntu's, built with P (preserve argv[0]) support.
COPY --from=binfmt /usr/bin/ /usr/bin/
COPY --from=buildkit /usr/bin/buildkitd /usr/bin/buildctl /usr/bin/buildkit-runc /usr/bin/
COPY --from=buildkit /usr/bin/buildkit-qemu-* /usr/bin/
COPY --from=probes /tree/ /
COPY vm-image/buildkitd.toml /etc/buildkit/buildkitd.toml
COPY vm-image/node-ssh.conf /etc/ssh/ssh_config.d/exobuild-node.conf
COPY vm-image/exobuild-agent /usr/local/bin/exobuild-agent
# The agent reports the version of the exobuild that made this image (src/agent/agent-version.ts).
ARG EXOBUILD_VERSION
RUN test -n "$EXOBUILD_VERSION" || { echo "EXOBUILD_VERSION is empty: build this with 'exobuild builder build'" >&2; exit 1; } \
    && sed -i "s/^AGENT_VERSION=unstamped\$/AGENT_VERSION=${EXOBUILD_VERSION}/" /usr/local/bin/exobuild-agent \
    && grep -qx "AGENT_VERSION=${EXOBUILD_VERSION}" /usr/local/bin/exobuild-agent
# BuildKit's root is on the VM's own disk (the agent points --root at /exobuild/state/buildkit,
# which the apple-container driver never shares from the host).
ENV BUILDKIT_SETUP_CGROUPV2_ROOT=1
# The hash of this file and vm-image/ (exobuild passes it): how `builder load` knows what it loads.
ARG EXOBUILD_INPUT_HASH
RUN test -n "$EXOBUILD_INPUT_HASH" || { echo "EXOBUILD_INPUT_HASH is empty: build this with 'exobuild builder build'" >&2; exit 1; }
LABEL org.opencontainers.image.title="exobuild builder (Ubuntu + BuildKit)" \
      dev.exobuild.builder-kind="containerfile" \
      dev.exobuild.input-hash="${EXOBUILD_INPUT_HASH}"
ENTRYPOINT ["/usr/local/bin/exobuild-agent"]
CMD ["version"]
