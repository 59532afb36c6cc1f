#!/bin/sh
# Downloads Debian packages of any architecture and unpacks them, without touching the host's
# apt state (a private apt dir under DEST_DIR). Used by the builder recipe (probe binaries) and
# by the tests (base images).
#
#   debian-download.sh DEBIAN_ARCH DEST_DIR PACKAGE...
#
# Env: EXOBUILD_DEBIAN_MIRROR  (default http://deb.debian.org/debian)
#      EXOBUILD_DEBIAN_SUITES  (default "trixie stable": tried in order until one's index
#                               downloads cleanly; a mirror mid-sync can serve a stale index
#                               under one name and a good one under another)
#      EXOBUILD_DEBIAN_KEYRING (default Debian's archive keyring)
# Each PACKAGE is unpacked (dpkg-deb -x) into DEST_DIR/PACKAGE/. Idempotent.
set -eu

[ $# -ge 3 ] || { echo "usage: $0 DEBIAN_ARCH DEST_DIR PACKAGE..." >&2; exit 2; }
arch=$1; mkdir -p "$2"; dest=$(cd "$2" && pwd); shift 2
mirror=${EXOBUILD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suites=${EXOBUILD_DEBIAN_SUITES:-trixie stable}
keyring=${EXOBUILD_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

need=""
for pkg in "$@"; do
	[ -d "$dest/$pkg" ] || need="$need $pkg"
done
[ -n "$need" ] || exit 0

apt_dir="$dest/.apt-$arch"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$apt_dir/sources.list.d"

apt_opts() {
	printf '%s\n' \
		"-oAPT::Architecture=$arch" "-oAPT::Architectures=$arch" \
		"-oDir::Etc::SourceList=$apt_dir/sources.list" "-oDir::Etc::SourceParts=$apt_dir/sources.list.d" \
		"-oDir::State::Lists=$apt_dir/lists" "-oDir::Cache=$apt_dir/cache" \
		"-oDir::State::status=/dev/null" "-oDebug::NoLocking=1" "-oAPT::Sandbox::User=root" \
		"-oAcquire::Retries=3"
}

if [ ! -f "$apt_dir/lists/.updated" ]; then
	ok=""
	for suite in $suites; do
		printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$suite" > "$apt_dir/sources.list"
		# shellcheck disable=SC2046 # one option per line, none has spaces
		if apt-get $(apt_opts) -qq update 2>"$apt_dir/update.err" && ! grep -q '^E:' "$apt_dir/update.err"; then
			ok=$suite
			break
		fi
		echo "debian-download: index of $suite/$arch failed at $mirror, trying the next suite" >&2
	done
	[ -n "$ok" ] || { cat "$apt_dir/update.err" >&2; echo "debian-download: no suite of [$suites] has a usable $arch index at $mirror" >&2; exit 1; }
	: > "$apt_dir/lists/.updated"
fi

for pkg in $need; do
	# shellcheck disable=SC2046
	(cd "$apt_dir/debs" && apt-get $(apt_opts) -qq download "$pkg")
	deb=$(find "$apt_dir/debs" -name "${pkg}_*.deb" | head -n 1)
	rm -rf "$dest/$pkg.partial"
	mkdir -p "$dest/$pkg.partial"
	dpkg-deb -x "$deb" "$dest/$pkg.partial"
	mv "$dest/$pkg.partial" "$dest/$pkg"
done
