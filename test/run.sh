#!/bin/sh
# The test command: installs what is needed, then runs the fast tests (`npm test`), the security
# suite (`npm run test:security`) and the end-to-end tests that build real images under emulation
# (`npm run test:e2e`).
#
# As a normal user (with /etc/subuid and /etc/subgid ranges) everything runs as that user.
# As root (CI): the fast tests and the security suite run as root; the e2e suite runs as the
# normal user exobuild-ci (made with useradd -m if missing) from a copy of the checkout in its
# home, next to a copy of ../shared/upstream (the same relative layout); then a smaller e2e set
# runs as root, which stays supported. Where ../shared/upstream exists, EXOBUILD_BUILDKIT and
# EXOBUILD_BINFMT name its tarballs (the user's copy for the user), so the builder has BuildKit.
set -eu
cd "$(dirname "$0")/.."
sh .ci/install-deps.sh
# The builder image gets BuildKit and tonistiigi/binfmt from ../shared/upstream when it is there.
# shellcheck source=.ci/upstream-env.sh
. .ci/upstream-env.sh
use_upstream_tools ../shared/upstream

if [ "$(id -u)" -ne 0 ]; then
	npm test
	npm run test:security
	npm run test:e2e
	exit 0
fi

npm test
npm run test:security

user=exobuild-ci
id -u "$user" >/dev/null 2>&1 || useradd -m "$user"
# useradd gives a subordinate range where /etc/login.defs asks for one; else take the next free one.
for file in /etc/subuid /etc/subgid; do
	if ! grep -q "^$user:" "$file" 2>/dev/null; then
		start=$(awk -F: 'BEGIN { end = 100000 } $2 + $3 > end { end = $2 + $3 } END { print end }' "$file" 2>/dev/null || echo 100000)
		echo "$user:$start:65536" >> "$file"
	fi
done
home=$(getent passwd "$user" | cut -d: -f6)
project=$PWD
copy=$home/$(basename "$project")

echo "test/run.sh: copying the checkout to $copy for the e2e suite as $user" >&2
if [ -d "$copy" ]; then
	# Keep the user's own caches (its builder image); replace everything else.
	find "$copy" -mindepth 1 -maxdepth 1 ! -name .cache -exec rm -rf {} +
	rm -rf "$copy/.cache/fixtures"
fi
mkdir -p "$copy"
tar -C "$project" --exclude=./.cache/e2e --exclude=./.cache/demo -cf - . | tar -C "$copy" -xf -
if [ -d "$project/../shared/upstream" ]; then
	mkdir -p "$home/shared"
	rm -rf "$home/shared/upstream"
	cp -a "$project/../shared/upstream" "$home/shared/upstream"
	chown -R "$user:" "$home/shared"
fi
chown -R "$user:" "$copy"

user_buildkit=$(upstream_file "$home/shared/upstream" buildkit)
user_binfmt=$(upstream_file "$home/shared/upstream" binfmt)
as_user() {
	runuser -u "$user" -- env HOME="$home" USER="$user" LOGNAME="$user" \
		EXOBUILD_BUILDKIT="$user_buildkit" EXOBUILD_BINFMT="$user_binfmt" sh -c "cd '$copy' && $1"
}

# The builder image root's tests made or used, handed over (`builder load` verifies it) so the
# user does not make it again.
user_cache=$copy/.cache/e2e/exobuild
if ! as_user "EXOBUILD_CACHE_DIR='$user_cache' bin/exobuild builder inspect >/dev/null 2>&1"; then
	handover=$home/.exobuild-builder.tar
	if EXOBUILD_CACHE_DIR="$project/.cache/e2e/exobuild" bin/exobuild builder save --output "$handover" >/dev/null 2>&1; then
		chown "$user:" "$handover"
		as_user "EXOBUILD_CACHE_DIR='$user_cache' bin/exobuild builder load --input '$handover' >/dev/null" || true
	fi
	rm -f "$handover"
fi

as_user "npm run test:e2e"
as_user "node --test --test-concurrency=1 --test-timeout=1800000 dist/test/security/rootless.test.js"

echo "test/run.sh: a smaller e2e set as root" >&2
node --test --test-concurrency=1 --test-timeout=3600000 dist/test/e2e/build-busybox.test.js dist/test/e2e/teardown.test.js
