#!/bin/sh
# Runs as pid 1 of a fresh user+mount+pid+ipc+uts namespace (see namespaces.ts), with the
# HOST's /bin/sh, root with full capabilities inside the namespace (as a normal user, that root is
# the user and ids 1..65536 are its subordinate ids: id-map.ts). Builds the sandbox's root
# and execs the command in it:
#
#   enter-sandbox.sh ROOTFS RUN_DIR [--mount ro|rw HOST_PATH SANDBOX_PATH]... [--env K=V]...
#                    [--workdir DIR] [--ro-proc-sys] [--bounding-set CAPS] -- CMD...
#
# --workdir DIR        the command starts in DIR (created if missing) instead of /
# --ro-proc-sys        /proc/sys is read-only, as OCI runtimes' default readonlyPaths make it
# --bounding-set CAPS  the command runs with this capability bounding set (setpriv syntax, e.g.
#                      -all,+chown,+kill): the host's setpriv, copied with its libraries into the
#                      sandbox's /dev/.exobuild-setpriv (the host's tree is gone after pivot_root)
#
# Mount table of the sandbox (all in the private mount namespace: the host never sees them,
# and they vanish with the namespace):
#   /                 overlay: lower = ROOTFS (the cached builder rootfs, never written),
#                     upper/work on a tmpfs at RUN_DIR/overlay (memory; gone with the sandbox)
#   /proc             a new proc (this pid namespace)
#   /sys              rbind of the host's /sys (a new sysfs needs a network namespace of one's own)
#   /dev              tmpfs with binds of null zero full random urandom tty, a new devpts
#                     instance, tmpfs /dev/shm
#   /run, /tmp        tmpfs
#   /etc/resolv.conf, /etc/hosts   binds of the host's (the network namespace is the host's)
#   /exobuild/state   bind of RUN_DIR/state (rw): engine roots and scratch on the host's disk
#                     (removed with the run: as a normal user, in a user namespace, owned-dir.ts)
#   each --mount      bind, remounted read-only for ro
# binfmt_misc is not mounted here: the agent mounts its own instance at
# /proc/sys/fs/binfmt_misc, private to this user namespace.
set -eu

rootfs=$1
run=$2
shift 2
new=$run/root
mkdir -p "$run/overlay" "$new" "$run/state"
# The overlay's upper and work dirs live in memory: what the sandbox changes in its root never
# reaches the host's disk (as a normal user it would be owned by subordinate ids there).
mount -t tmpfs -o mode=0755 tmpfs "$run/overlay"
mkdir "$run/overlay/upper" "$run/overlay/work"
mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$run/overlay/upper,workdir=$run/overlay/work" "$new"

mount -t proc -o nosuid,nodev,noexec proc "$new/proc"
mount --rbind /sys "$new/sys"
mount -t tmpfs -o nosuid,mode=0755 tmpfs "$new/dev"
for node in null zero full random urandom tty; do
	: > "$new/dev/$node"
	mount --bind "/dev/$node" "$new/dev/$node"
done
mkdir -p "$new/dev/pts" "$new/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$new/dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$new/dev/shm"
ln -s pts/ptmx "$new/dev/ptmx"
ln -s /proc/self/fd "$new/dev/fd"
ln -s /proc/self/fd/0 "$new/dev/stdin"
ln -s /proc/self/fd/1 "$new/dev/stdout"
ln -s /proc/self/fd/2 "$new/dev/stderr"
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs "$new/run"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$new/tmp"
for file in /etc/resolv.conf /etc/hosts; do
	if [ -f "$file" ]; then
		[ -e "$new$file" ] || : > "$new$file"
		mount --bind "$file" "$new$file"
	fi
done
mkdir -p "$new/exobuild/state"
mount --bind "$run/state" "$new/exobuild/state"

quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
extra_env=""
workdir=/
bounding=""
while [ $# -gt 0 ]; do
	case $1 in
		--mount)
			mode=$2 host=$3 target=$new$4
			if [ -d "$host" ]; then mkdir -p "$target"; else mkdir -p "$(dirname "$target")"; : > "$target"; fi
			mount --bind "$host" "$target"
			[ "$mode" = ro ] && mount -o remount,bind,ro "$target"
			shift 4 ;;
		--env) extra_env="$extra_env $(quote "$2")"; shift 2 ;;
		--workdir) workdir=$2; shift 2 ;;
		--ro-proc-sys)
			mount --bind "$new/proc/sys" "$new/proc/sys"
			mount -o remount,bind,ro "$new/proc/sys"
			shift ;;
		--bounding-set) bounding=$2; shift 2 ;;
		--) shift; break ;;
		*) echo "enter-sandbox: unexpected argument $1" >&2; exit 2 ;;
	esac
done

setpriv_dir=/dev/.exobuild-setpriv
loader=""
if [ -n "$bounding" ]; then
	mkdir -p "$new$setpriv_dir"
	setpriv=$(command -v setpriv)
	cp "$setpriv" "$new$setpriv_dir/setpriv"
	for lib in $(ldd "$setpriv" | grep -o '/[^ ]*'); do
		cp -L "$lib" "$new$setpriv_dir/"
		case $lib in */ld-linux*|*/ld-musl*|*/ld64*) loader=$setpriv_dir/${lib##*/} ;; esac
	done
	[ -n "$loader" ] || { echo "enter-sandbox: no dynamic loader found for $setpriv" >&2; exit 2; }
fi

cd "$new"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
[ -d "$workdir" ] || mkdir -p "$workdir"
cd "$workdir"

# A clean environment: only what the sandbox sets, never the host's (secrets stay out).
eval "set -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 $extra_env \"\$@\""
if [ -n "$bounding" ]; then
	set -- "$loader" --library-path "$setpriv_dir" "$setpriv_dir/setpriv" --bounding-set "$bounding" --inh-caps -all -- "$@"
fi
exec "$@"
