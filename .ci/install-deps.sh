#!/bin/sh
# Installs what exobuild needs on a fresh Debian/Ubuntu machine, then builds it. Installing
# packages needs root; when every package is there, a normal user can run it (npm ci, build).
# Idempotent: a second run does only `npm ci` if the lock file changed, and the build.
#   - apt: mmdebstrap and debian-archive-keyring (make the builder image), arch-test (mmdebstrap
#     of foreign test base images), util-linux (unshare, setpriv), uidmap (newuidmap and
#     newgidmap: a normal user's sandbox is mapped through /etc/subuid and /etc/subgid), ca-certificates,
#     qemu-user-static (only the tests use the host's copy: agent-level tests run the agent
#     outside the builder image), shellcheck (npm test lints the shell code), openssh-client
#     (the --ssh test makes a key and runs an agent), docker-registry and apache2-utils (the
#     --push test runs a real registry on loopback with an htpasswd login).
#   - Node.js >= 20 (Debian's nodejs if none is installed).
#   - npm dependencies, then `npm run build`.
set -eu
cd "$(dirname "$0")/.."

packages="mmdebstrap arch-test util-linux uidmap debian-archive-keyring ca-certificates qemu-user-static shellcheck openssh-client docker-registry apache2-utils"
missing=""
for pkg in $packages; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $pkg"
done
command -v node >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ] && [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages:$missing" >&2
	echo "install-deps: run this script as root once to install them (sudo sh .ci/install-deps.sh), then again as yourself" >&2
	exit 1
fi
if [ -n "$missing" ]; then
	echo "install-deps: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086 # a list of package names
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
	echo "install-deps: Node.js $(node --version) is too old; exobuild needs Node.js 20 or later" >&2
	exit 1
fi

if [ ! -d node_modules ] || ! cmp -s package-lock.json node_modules/.exobuild-lock-copy; then
	npm ci --no-audit --no-fund --loglevel=error
	cp package-lock.json node_modules/.exobuild-lock-copy
fi
npm run --silent build
