#!/bin/sh
# Probe binaries: a static busybox of each listed architecture at
# TREE/usr/lib/exobuild/probes/QEMU_ARCH/busybox, which the agent runs to prove a handler.
# From Debian's busybox-static of that architecture (vm-image/debian-download.sh), so any
# image with apt and Debian's archive keyring can make them: the distro recipe
# (make-builder-rootfs.sh) and Containerfile.builder both call this.
#
#   make-probes.sh TREE WORK_DIR "QEMU_ARCH=DEBIAN_ARCH..."
#
# Env: as debian-download.sh (EXOBUILD_DEBIAN_MIRROR, EXOBUILD_DEBIAN_SUITES).
# The pairs come from src/platforms/table.ts (exobuild passes them).
set -eu

if [ $# -ne 3 ] || [ -z "$3" ]; then
	echo "usage: $0 TREE WORK_DIR \"QEMU_ARCH=DEBIAN_ARCH...\"" >&2
	exit 2
fi
tree=$1 work=$2 pairs=$3
here=$(cd "$(dirname "$0")" && pwd)

for pair in $pairs; do
	qemu=${pair%%=*}
	debian=${pair#*=}
	"$here/debian-download.sh" "$debian" "$work/$debian" busybox-static
	mkdir -p "$tree/usr/lib/exobuild/probes/$qemu"
	cp "$work/$debian/busybox-static/usr/bin/busybox" "$tree/usr/lib/exobuild/probes/$qemu/busybox"
done
