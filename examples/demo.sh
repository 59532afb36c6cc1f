#!/bin/sh
# The demo: installs what is missing (apt packages, npm dependencies, the builder image on first
# use), builds examples/hello for three foreign architectures in one sandbox, and prints what
# each platform's RUN step reported.
#   DEMO_PLATFORMS  platforms to build (default linux/ppc64le,linux/s390x,linux/riscv64)
#   DEMO_DIR        where the base image and the result go (default .cache/demo in the checkout)
set -eu
cd "$(dirname "$0")/.."
sh .ci/install-deps.sh

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
