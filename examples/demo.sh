#!/bin/sh
# The demo: installs what is missing (apt packages, npm dependencies, the builder image on first
# use), builds examples/hello for three foreign architectures in one sandbox, and prints what
# each platform's RUN step reported.
# Runs as a normal user with /etc/subuid and /etc/subgid ranges (no root; only installing missing
# apt packages needs root, once), or as root.
#   DEMO_PLATFORMS  platforms to build (default linux/ppc64le,linux/s390x,linux/riscv64)
#   DEMO_DIR        where the base image and the result go (default .cache/demo in the checkout)
#   EXOBUILD_BUILDKIT, EXOBUILD_BINFMT  tarballs for the builder image (docs/buildkit.md;
#                   default: ../shared/upstream's where this setup has them)
set -eu
cd "$(dirname "$0")/.."
sh .ci/install-deps.sh
# BuildKit and tonistiigi/binfmt for the builder image: this setup's ../shared/upstream tarballs
# when they are there (else the pinned official BuildKit release, or buildah only offline).
# shellcheck source=.ci/upstream-env.sh
. .ci/upstream-env.sh
use_upstream_tools ../shared/upstream

# No root needed: as a normal user the sandbox maps ids 1..65536 to the user's subordinate ids.
if [ "$(id -u)" -ne 0 ]; then
	user=$(id -un)
	for file in /etc/subuid /etc/subgid; do
		ids=$(awk -F: -v user="$user" -v uid="$(id -u)" -v gid="$(id -g)" -v file="$file" \
			'($1 == user || (file == "/etc/subuid" && $1 == uid) || (file == "/etc/subgid" && $1 == gid)) { n += $3 } END { print n + 0 }' "$file" 2>/dev/null || echo 0)
		if [ "$ids" -lt 65536 ]; then
			echo "demo: $file gives $user $ids subordinate ids; a sandbox needs 65536" >&2
			echo "demo: as root, run: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $user (any free range works), or run the demo as root" >&2
			exit 2
		fi
	done
fi

platforms=${DEMO_PLATFORMS:-linux/ppc64le,linux/s390x,linux/riscv64}
dir=${DEMO_DIR:-$PWD/.cache/demo}
mkdir -p "$dir"

# No registry is needed: FROM busybox is served from an OCI layout made from Debian's busybox-static.
layout=$(node dist/test/fixtures/make-base-image.js busybox "$dir/base-images" "$platforms")

bin/exobuild build \
	--platform "$platforms" \
	--build-context "busybox=oci-layout://$layout" \
	--build-arg GREETING=hello \
	--tag exobuild-demo:latest \
	--output "type=oci,dest=$dir/hello.oci.tar" \
	examples/hello

echo
echo "What each platform's RUN step reported (/report.txt in $dir/hello.oci.tar):"
node examples/print-file.mjs "$dir/hello.oci.tar" /report.txt
