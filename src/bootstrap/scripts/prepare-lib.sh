# --- capssh host preparation: shared functions (lib.sh) ---
# The Rust side (src/bootstrap/prepare) puts the variables above this text and a mode's main
# part below it. POSIX sh: the host's /bin/sh may be dash.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022
STAMP=/var/lib/capssh/prepared
# Paths that changed in this run (install_file records them), to know what to restart.
CHANGED=" "

say() { echo "[capssh] $*"; }

# make_staging: a private folder for this run's downloads, removed however the job ends. Those
# of earlier runs go first: one lost to a reboot never ran its trap (one preparation runs at a
# time on a host: one machine holds it).
make_staging() {
  mkdir -p /var/lib/capssh
  chmod 0700 /var/lib/capssh
  rm -rf /var/lib/capssh/prepare.*
  STAGING=$(mktemp -d /var/lib/capssh/prepare.XXXXXX)
  trap 'rm -rf "$STAGING"' EXIT
}

# fail REASON MESSAGE: ends the job. The controller reads the last such line into the
# HostPrepared condition (reason and message), so the message says what to fix.
fail() {
  echo "capssh-prepare: $1: $2"
  exit 1
}

changed() { case "$CHANGED" in *" $1 "*) return 0 ;; esac; return 1; }

need_systemd() {
  if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
    fail NoSystemd "the host does not run systemd: capssh installs containerd and kubelet as systemd services; pre-bake such a host and use preparation mode None"
  fi
}

# sha256_of FILE: its SHA-256 in hex.
sha256_of() { sha256sum < "$1" | cut -d' ' -f1; }

# install_file SRC DEST MODE: puts SRC's bytes at DEST unless DEST holds them already (so an
# unchanged file keeps its mtime). The new file is renamed into place: a running binary is
# never written into.
install_file() {
  if [ -f "$2" ] && [ "$(sha256_of "$1")" = "$(sha256_of "$2")" ]; then
    return 0
  fi
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.capssh-new" || fail InstallFailed "cannot write $2.capssh-new"
  chmod "$3" "$2.capssh-new"
  mv -f "$2.capssh-new" "$2" || fail InstallFailed "cannot move $2 into place"
  CHANGED="$CHANGED$2 "
  say "installed $2"
}

# put_file DEST MODE: install_file with the content read from stdin. Feed it with a here-document,
# not a pipe: a function at the end of a pipe runs in a subshell, and CHANGED would be lost.
put_file() {
  mkdir -p "$STAGING"
  cat > "$STAGING/put-file"
  install_file "$STAGING/put-file" "$1" "$2"
  rm -f "$STAGING/put-file"
}

# version_of TOOL PATH: the version the binary reports (v1.36.3), empty when it says nothing.
version_of() {
  [ -n "$2" ] && [ -x "$2" ] || return 0
  case "$1" in
    kubelet) "$2" --version 2>/dev/null | sed -n 's/^Kubernetes //p' | head -n 1 ;;
    kubeadm) "$2" version -o short 2>/dev/null | head -n 1 ;;
    kubectl) "$2" version --client 2>/dev/null | sed -n 's/^Client Version: //p' | head -n 1 ;;
  esac
}

# version_matches SEEN: v1.36.3 is matched by v1.36.3 and v1.36.3-x / v1.36.3+x, not by v1.36.30.
version_matches() {
  case "$1" in "$VERSION" | "$VERSION"[-+]*) return 0 ;; esac
  return 1
}

# already_prepared STAMP_TEXT: the fast path. True when an earlier run recorded exactly this
# preparation, the installed kubelet and kubeadm report the version, and containerd runs.
# Says why not, so that a reinstall is never a mystery.
already_prepared() {
  if [ ! -f "$STAMP" ]; then
    say "no earlier preparation recorded in $STAMP"
    return 1
  fi
  if [ "$(cat "$STAMP")" != "$1" ]; then
    say "$STAMP records another preparation: $(tr '\n' ' ' < "$STAMP")"
    return 1
  fi
  for tool in kubelet kubeadm; do
    path=$(command -v "$tool" || true)
    seen=$(version_of "$tool" "$path")
    if ! version_matches "$seen"; then
      say "$tool (${path:-not found}) reports ${seen:-no version}, not $VERSION"
      return 1
    fi
  done
  if ! systemctl is-active --quiet containerd; then
    say "containerd is not running"
    return 1
  fi
}

# check_installed: every Kubernetes binary on PATH reports the version, or the job fails.
check_installed() {
  for tool in kubelet kubeadm kubectl; do
    path=$(command -v "$tool" || true)
    seen=$(version_of "$tool" "$path")
    version_matches "$seen" || fail VersionMismatch "after installing, $tool (${path:-not found}) reports ${seen:-no version}, expected $VERSION"
  done
}

# Kernel modules: overlay and br_netfilter. Where they are built in (or already loaded) there
# is nothing to load, and modprobe may not even exist.
kernel_modules() {
  missing=""
  grep -qw overlay /proc/filesystems || missing="$missing overlay"
  [ -d /proc/sys/net/bridge ] || missing="$missing br_netfilter"
  for module in $missing; do
    command -v modprobe >/dev/null 2>&1 || fail KernelModuleMissing "kernel module $module is not loaded and the host has no modprobe to load it"
    modprobe "$module" || fail KernelModuleMissing "modprobe $module failed"
    say "loaded kernel module $module"
  done
  # Loadable modules (they have an initstate) are loaded again at boot; built-in ones need nothing.
  persist=""
  for module in overlay br_netfilter; do
    [ -e "/sys/module/$module/initstate" ] && persist="$persist $module"
  done
  if [ -n "$persist" ]; then
    # shellcheck disable=SC2086
    put_file /etc/modules-load.d/capssh-kubernetes.conf 0644 <<EOF
$(printf '%s\n' $persist)
EOF
  fi
}

sysctls() {
  put_file /etc/sysctl.d/99-capssh-kubernetes.conf 0644 <<'EOF'
# Written by capssh host preparation: what the kubelet and CNI plugins need.
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
EOF
  # Set directly: `sysctl --system` would re-apply every other file too.
  for key in net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables net/ipv4/ip_forward; do
    [ -e "/proc/sys/$key" ] || fail SysctlFailed "/proc/sys/$key does not exist"
    [ "$(cat "/proc/sys/$key")" = 1 ] || echo 1 > "/proc/sys/$key" || fail SysctlFailed "cannot set /proc/sys/$key to 1"
  done
}

# The kubelet refuses to run with swap on (by default): off now, and off after a reboot.
swap_off() {
  if [ "$(wc -l < /proc/swaps)" -gt 1 ]; then
    swapoff -a || fail SwapOffFailed "swapoff -a failed"
    say "turned swap off"
  fi
  if grep -Eq '^[^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]' /etc/fstab 2>/dev/null; then
    sed -i.capssh-bak -E 's/^([^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]].*)$/# disabled by capssh: \1/' /etc/fstab
    say "commented out the swap entries of /etc/fstab (backup /etc/fstab.capssh-bak)"
  fi
}

host_setup() {
  kernel_modules
  sysctls
  swap_off
}

# containerd_config PAUSE_IMAGE: CRI with the systemd cgroup driver (preparation only runs on
# systemd hosts, and kubeadm configures the kubelet for systemd by default) and the sandbox
# image kubeadm expects, so that nothing is pulled for it. Version 2 is read by containerd 1.6,
# 1.7 and 2.x.
containerd_config() {
  # Pod sandboxes ask for oom_score_adj -998. Where capssh's root cannot lower a score (no
  # CAP_SYS_RESOURCE: some containers and sandboxed VMs), runc then fails every sandbox with
  # "can't get final child's PID from pipe"; containerd can clamp the score instead.
  restrict_oom=false
  score=$(cat /proc/self/oom_score_adj 2>/dev/null || echo 0)
  if [ "$score" -gt -1000 ]; then
    (echo $((score - 1)) > /proc/self/oom_score_adj) 2>/dev/null || restrict_oom=true
  fi
  put_file /etc/containerd/config.toml 0644 <<EOF
# Written by capssh host preparation.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$1"
  restrict_oom_score_adj = $restrict_oom

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d"

# Registry mirrors (spec.preparation.registry): one hosts.toml per upstream registry.
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
EOF
  if command -v crictl >/dev/null 2>&1; then
    put_file /etc/crictl.yaml 0644 <<'EOF'
runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
EOF
  fi
}

# pause_image: the sandbox image the installed kubeadm uses for this version.
pause_image() {
  image=$(kubeadm config images list --kubernetes-version "$VERSION" 2>/dev/null | grep '/pause:' | head -n 1)
  [ -n "$image" ] || fail KubeadmFailed "kubeadm config images list --kubernetes-version $VERSION printed no pause image"
  echo "$image"
}

# start_containerd UNIT_FILES...: enabled, and (re)started when anything it runs changed.
start_containerd() {
  restart=""
  for path in "$@" /etc/containerd/config.toml; do changed "$path" && restart=yes; done
  systemctl is-enabled --quiet containerd 2>/dev/null || systemctl enable containerd >/dev/null 2>&1 || fail ServiceFailed "systemctl enable containerd failed"
  if [ -n "$restart" ] || ! systemctl is-active --quiet containerd; then
    systemctl restart containerd || fail ServiceFailed "containerd did not start: $(systemctl status containerd --no-pager 2>&1 | tail -n 5)"
    say "started containerd"
  fi
  tries=0
  until ctr version >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 30 ] || fail ServiceFailed "containerd does not answer on its socket after 30 s"
    sleep 1
  done
}

# enable_kubelet FILES...: enabled, not started: kubeadm init/join starts it once its
# configuration exists. A kubelet already running is restarted when what it runs changed.
enable_kubelet() {
  systemctl is-enabled --quiet kubelet 2>/dev/null || systemctl enable kubelet >/dev/null 2>&1 || fail ServiceFailed "systemctl enable kubelet failed"
  if systemctl is-active --quiet kubelet; then
    for path in "$@"; do
      if changed "$path"; then systemctl restart kubelet; say "restarted kubelet"; break; fi
    done
  fi
}

# daemon_reload FILES...: only when a unit file changed.
daemon_reload() {
  for path in "$@"; do
    if changed "$path"; then systemctl daemon-reload; return 0; fi
  done
}

# Tools kubeadm's preflight checks look for, which no mode installs in air-gapped sites.
warn_missing_tools() {
  for tool in iptables conntrack socat ethtool; do
    command -v "$tool" >/dev/null 2>&1 || say "warning: $tool is not installed; kubeadm's preflight checks may refuse the host"
  done
}

# fetch URL DEST: the URL reaches curl or wget on stdin, never on a command line (where every
# user of the host could read it).
fetch() {
  mkdir -p "$(dirname "$2")"
  case "$DOWNLOADER" in
    curl) printf 'url = "%s"\n' "$1" | curl -fsS -L --retry 3 --connect-timeout 30 --speed-limit 1024 --speed-time 60 -K - -o "$2" ;;
    wget) printf '%s\n' "$1" | wget -q --tries=3 --timeout=60 -i - -O "$2" ;;
  esac
}

pick_downloader() {
  if command -v curl >/dev/null 2>&1; then DOWNLOADER=curl
  elif command -v wget >/dev/null 2>&1; then DOWNLOADER=wget
  else fail MissingTool "the host has neither curl nor wget to download with"
  fi
}

# How long (seconds) another package manager run may hold its lock before the job gives up:
# unattended upgrades on a host's first boot take minutes, and a failed preparation is never
# run again. Set above lib.sh to change it (the tests do).
LOCK_WAIT=${LOCK_WAIT:-600}

# package_manager_locks: the lock files of the host's package managers. apt and dpkg (POSIX
# locks), dnf 5 (a POSIX lock) and rpm itself; dnf 4 and yum write their PID into *.pid files.
package_manager_locks() {
  case "$OS_FAMILY" in
    debian) echo /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock ;;
    redhat) echo /var/lib/rpm/.rpm.lock /run/dnf/rpmtransaction.lock /var/lib/dnf/rpmdb_lock.pid \
      /var/cache/dnf/metadata_lock.pid /var/cache/dnf/download_lock.pid /var/run/yum.pid ;;
  esac
}

# lock_holder FILE: "process PID (NAME)" when another process holds FILE's lock, nothing when it
# is free. A lock is read from /proc/locks (POSIX, open file description and flock locks alike,
# so no fuser or lsof is needed); a *.pid file is held while the process it names lives.
lock_holder() {
  [ -e "$1" ] || return 0
  case "$1" in
    *.pid)
      pid=$(tr -cd '0-9' < "$1" 2>/dev/null | cut -c1-10)
      if [ -n "$pid" ] && [ "$pid" != "$$" ] && [ -d "/proc/$pid" ]; then
        echo "process $pid ($(cat "/proc/$pid/comm" 2>/dev/null || echo unknown))"
      fi
      return 0
      ;;
  esac
  id=$(stat -L -c %d:%i "$1" 2>/dev/null) || return 0
  # Field 6 is MAJOR:MINOR:INODE; a line with "->" in field 2 is a waiter, not a holder.
  pids=$(awk -v inode="${id#*:}" '$2 != "->" { n = split($6, f, ":"); if (f[n] == inode) print $5 }' /proc/locks 2>/dev/null)
  for pid in $pids; do
    if [ "$pid" = -1 ]; then
      echo "a process (an open file description lock)"
      return 0
    fi
    # The same inode number on another file system is another file: the holder has FILE open.
    for fd in "/proc/$pid/fd/"*; do
      if [ "$(stat -L -c %d:%i "$fd" 2>/dev/null)" = "$id" ]; then
        echo "process $pid ($(cat "/proc/$pid/comm" 2>/dev/null || echo unknown))"
        return 0
      fi
    done
  done
}

# locks_held: "FILE is held by process PID (NAME)" for the first package manager lock taken, or nothing.
locks_held() {
  for lock in $(package_manager_locks); do
    holder=$(lock_holder "$lock")
    if [ -n "$holder" ]; then
      echo "$lock is held by $holder"
      return 0
    fi
  done
}

# wait_for_package_manager: returns once no package manager lock is held, waiting up to
# LOCK_WAIT seconds. apt-get update, apt-mark and dnf do not wait for a lock by themselves (or
# wait forever), so every package manager command here comes after this.
wait_for_package_manager() {
  waited=0
  while held=$(locks_held) && [ -n "$held" ]; do
    if [ "$waited" -ge "$LOCK_WAIT" ]; then
      fail PackageManagerLocked "$held after $waited s of waiting: another package manager run (unattended upgrades on first boot?) did not finish; let it finish or stop it, then replace this Machine (a failed preparation is not run again)"
    fi
    [ $((waited % 60)) -ne 0 ] || say "waiting for the package manager: $held"
    sleep 1
    waited=$((waited + 1))
  done
  [ "$waited" -eq 0 ] || say "the package manager is free after $waited s"
}

# pm_run LOG COMMAND...: runs a package manager command with its output in the job's log and in
# $STAGING/LOG (for pm_failed); returns the command's exit status.
pm_run() {
  log="$STAGING/$1"
  shift
  { rc=0; "$@" 2>&1 || rc=$?; echo "$rc" > "$log.rc"; } | tee "$log"
  return "$(cat "$log.rc")"
}

# pm_failed LOG MESSAGE: ends the job after a failed package manager command. When it failed
# on another run's lock (apt names the holder in its log; otherwise a lock still held now), the
# reason is PackageManagerLocked, not a failure of the packages.
pm_failed() {
  held=$(grep 'Could not get lock' "$STAGING/$1" 2>/dev/null | tail -n 1 | tr -d '\r' | sed -e 's/^.*Could not get lock/could not get lock/' -e 's/\.\.\..*$//')
  [ -n "$held" ] || held=$(locks_held)
  [ -z "$held" ] || fail PackageManagerLocked "$2: $held (after waiting up to $LOCK_WAIT s); another package manager run (unattended upgrades on first boot?) did not finish; let it finish or stop it, then replace this Machine"
  fail PackageManagerFailed "$2"
}

write_stamp() {
  put_file "$STAMP" 0644 <<EOF
$1
EOF
}
# --- end of lib.sh ---
