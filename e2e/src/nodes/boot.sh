#!/bin/sh
# Boots one node: systemd as PID 1 of its own PID, mount, UTS, IPC and cgroup namespaces, joined to
# an existing network namespace, on an overlay of the shared base rootfs.
#
#   boot.sh outer NODE_DIR NETNS CGROUP    (run by the harness; never returns while the node lives)
#   boot.sh inner NODE_DIR                 (PID 1 of the new namespaces; execs systemd)
#
# NODE_DIR holds lower (a link to the base rootfs), upper/, work/, root/ (the mount point) and
# containerd/ (containerd's state must not live on overlayfs: its snapshotter stacks overlays).
# Why not systemd-nspawn: it mounts the cgroup v1 hierarchies read-only, so containerd cannot make
# cgroups for containers. Here each node gets its own subtree of every hierarchy, mounted read-write
# inside its cgroup namespace (see ../../../../shared/design/TEST-HOSTS.md, item 4).
set -eu
mode=$1 dir=$2

if [ "$mode" = outer ]; then
  netns=$3 cgroup=$4
  for c in /sys/fs/cgroup/*/; do
    c=${c%/}
    [ -L "$c" ] && continue            # cpu -> cpu,cpuacct style aliases
    case $c in */unified) continue ;; esac
    mkdir -p "$c/$cgroup"
    if [ -f "$c/cpuset.cpus" ]; then
      cat "$c/cpuset.cpus" > "$c/$cgroup/cpuset.cpus"
      cat "$c/cpuset.mems" > "$c/$cgroup/cpuset.mems"
    fi
    echo $$ > "$c/$cgroup/cgroup.procs"
  done
  exec unshare --cgroup --mount --uts --ipc --pid --fork --kill-child=SIGKILL --net="/run/netns/$netns" "$0" inner "$dir"
fi

root=$dir/root
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$dir/lower,upperdir=$dir/upper,workdir=$dir/work" "$root"
mkdir -p "$root/var/lib/containerd"
mount --bind "$dir/containerd" "$root/var/lib/containerd"
mount -t proc proc "$root/proc"
# The kernel's boot id is this machine's, the same for every node and across a node's reboots;
# capssh's job records compare it to tell a rebooted host. Each boot gets its own, as a real one.
cat /proc/sys/kernel/random/uuid > "$dir/boot_id"
mount --bind -o ro "$dir/boot_id" "$root/proc/sys/kernel/random/boot_id"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=755 tmpfs "$root/sys/fs/cgroup"
for c in /sys/fs/cgroup/*/; do
  c=${c%/}; name=${c##*/}
  case $name in unified) continue ;; esac
  if [ -L "$c" ]; then ln -s "$(readlink "$c")" "$root/sys/fs/cgroup/$name"; continue; fi
  mkdir -p "$root/sys/fs/cgroup/$name"
  if [ "$name" = systemd ]; then
    mount -t cgroup -o none,name=systemd cgroup "$root/sys/fs/cgroup/systemd"
  else
    mount -t cgroup -o "$name" cgroup "$root/sys/fs/cgroup/$name"
  fi
done
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mkdir -p "$root/.old-root"
cd "$root"
pivot_root . .old-root
umount -l /.old-root
rmdir /.old-root
export container=other
# systemd would see this kernel's (empty) cgroup2 hierarchy and run "hybrid": units tracked in
# cgroup2 and only mirrored into name=systemd, which fails here ("Failed to attach ... to compat
# systemd cgroup"), and the kubelet then misses its slices there. Ask for the legacy layout, the one
# this machine really has. In a container systemd reads these from its own arguments, not
# /proc/cmdline (systemd-nspawn passes them the same way).
exec /lib/systemd/systemd --system systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1
