# shellcheck shell=sh
# Sourced by examples/demo.sh and test/run.sh. BuildKit and tonistiigi/binfmt for the builder image
# come from release-style tarballs (docs/buildkit.md); this setup keeps them next to the project in
# ../shared/upstream (see its README). Tests, CI and the demo use them when they are there; without
# them the builder gets the pinned official BuildKit release (downloaded) or, offline, buildah only.

# upstream_file DIR NAME: the newest DIR/NAME-*.linux-ARCH.tar.gz for this machine, or nothing.
upstream_file() {
	case $(uname -m) in
		x86_64) arch=amd64 ;;
		aarch64) arch=arm64 ;;
		ppc64le) arch=ppc64le ;;
		s390x) arch=s390x ;;
		riscv64) arch=riscv64 ;;
		armv7l) arch=arm ;;
		*) return 0 ;;
	esac
	found=""
	for file in "$1/$2"-*.linux-"$arch".tar.gz; do
		[ -f "$file" ] && found=$file
	done
	[ -z "$found" ] || printf '%s\n' "$found"
}

# use_upstream_tools DIR: exports EXOBUILD_BUILDKIT and EXOBUILD_BINFMT naming DIR's tarballs
# (absolute paths), unless they are set already.
use_upstream_tools() {
	[ -d "$1" ] || return 0
	dir=$(cd "$1" && pwd)
	if [ -z "${EXOBUILD_BUILDKIT:-}" ]; then
		EXOBUILD_BUILDKIT=$(upstream_file "$dir" buildkit)
		[ -z "$EXOBUILD_BUILDKIT" ] || export EXOBUILD_BUILDKIT
	fi
	if [ -z "${EXOBUILD_BINFMT:-}" ]; then
		EXOBUILD_BINFMT=$(upstream_file "$dir" binfmt)
		[ -z "$EXOBUILD_BINFMT" ] || export EXOBUILD_BINFMT
	fi
}
