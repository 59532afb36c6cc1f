#!/bin/sh
# The distro builder image's root filesystem, from Debian packages only:
#
#   make-builder-rootfs.sh OUT_TAR MIRROR "SUITE..." "PACKAGE..." "QEMU_ARCH=DEBIAN_ARCH..."
#
# mmdebstrap installs PACKAGES (variant apt, no docs, no man pages, no locales) from the first
# SUITE whose index downloads cleanly from MIRROR (any apt mirror: the air-gapped path), keeps
# only the emulators of the listed architectures, and adds a static busybox of each listed
# architecture at /usr/lib/exobuild/probes/QEMU_ARCH/busybox (make-probes.sh), which the agent runs to prove a
# handler, and links each kept /usr/bin/qemu-ARCH-static to /usr/bin/qemu-ARCH where that name is
# free (a hardlink: the name tonistiigi/binfmt registers, as in its image). The lists come from
# src/platforms/table.ts. Writes OUT_TAR (a rootfs tar). Needs no
# root: as a normal user mmdebstrap runs in unshare mode (a subordinate id range is required).
set -eu

[ $# -eq 5 ] || { echo "usage: $0 OUT_TAR MIRROR SUITES PACKAGES ARCH_PAIRS" >&2; exit 2; }
out=$1 mirror=$2 suites=$3 packages=$4 pairs=$5
here=$(cd "$(dirname "$0")" && pwd)
work=$(dirname "$out")/probes
mkdir -p "$work"

EXOBUILD_DEBIAN_MIRROR=$mirror EXOBUILD_DEBIAN_SUITES=$suites "$here/make-probes.sh" "$work/tree" "$work" "$pairs"
keep=""
for pair in $pairs; do
	keep="$keep qemu-${pair%%=*}"
done

include=$(printf '%s' "$packages" | tr ' ' ',')
# As root, mmdebstrap works in a chroot; as a normal user it maps the user's subordinate ids
# (/etc/subuid, /etc/subgid) through newuidmap/newgidmap itself. The probes tree is copied in with
# mmdebstrap's sync-in, which reads it as the calling user: in unshare mode a hook runs as the
# namespace's root, which cannot enter the user's 0700 cache folders.
mode=root
[ "$(id -u)" -eq 0 ] || mode=unshare
for suite in $suites; do
	echo "I: installing $include from $mirror $suite" >&2
	# shellcheck disable=SC2016 # the hooks expand $1 in mmdebstrap's shell, not here
	if mmdebstrap --mode="$mode" --variant=apt --include="$include" \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
		--customize-hook="cd \"\$1/usr/bin\" && for f in qemu-*; do case \" $keep \" in *\" \${f%-static} \"*) ;; *) rm -f \"\$f\" ;; esac; done" \
		--customize-hook="cd \"\$1/usr/bin\" && for f in qemu-*-static; do [ -e \"\${f%-static}\" ] || ln \"\$f\" \"\${f%-static}\"; done" \
		--customize-hook="sync-in '$work/tree' /" \
		--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
		"$suite" "$out" "$mirror"; then
		exit 0
	fi
	echo "W: mmdebstrap from $suite failed; trying the next suite" >&2
done
echo "E: no suite of [$suites] could be installed from $mirror" >&2
exit 1
