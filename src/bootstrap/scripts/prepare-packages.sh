# --- mode Packages (packages.sh) ---
# containerd from the host's own repositories; kubelet, kubeadm and kubectl from the Kubernetes
# package repository of the version's minor release (pkgs.k8s.io layout), pinned to the version.
need_systemd
make_staging
registry_check_all
minor=$(echo "$VERSION" | sed -E 's/^(v[0-9]+\.[0-9]+).*/\1/')
repo="$REPOSITORY_URL/core:/stable:/$minor"

stamp="capssh-preparation 1
mode=Packages
version=$VERSION
repository=$repo
runtime=$RUNTIME_PACKAGE"
[ -z "$REGISTRY_STAMP" ] || stamp="$stamp
registry=$REGISTRY_STAMP"
# The key given in the spec (without one the repository's own, which capssh allows over https
# only). A stamp line only when set: hosts prepared without one keep their stamp.
if [ -n "$SIGNING_KEY" ]; then
  printf '%s' "$SIGNING_KEY" > "$STAGING/signing-key.asc"
  stamp="$stamp
signing_key=sha256:$(sha256_of "$STAGING/signing-key.asc")"
fi
if already_prepared "$stamp"; then
  say "already prepared: Kubernetes $VERSION from $repo; nothing changed"
  registry_install
  exit 0
fi

host_setup
warn_missing_tools
number=${VERSION#v}
case "$OS_FAMILY" in
  debian)
    export DEBIAN_FRONTEND=noninteractive
    # apt reads an ASCII-armoured key named *.asc directly: no gpg needed on the host.
    if [ -n "$SIGNING_KEY" ]; then
      install_file "$STAGING/signing-key.asc" /etc/apt/keyrings/capssh-kubernetes.asc 0644
    else
      pick_downloader
      fetch "$repo/deb/Release.key" "$STAGING/Release.key" || fail DownloadFailed "cannot download $repo/deb/Release.key"
      install_file "$STAGING/Release.key" /etc/apt/keyrings/capssh-kubernetes.asc 0644
    fi
    put_file /etc/apt/sources.list.d/capssh-kubernetes.list 0644 <<EOF
deb [signed-by=/etc/apt/keyrings/capssh-kubernetes.asc] $repo/deb/ /
EOF
    # An unrelated source that cannot be reached (an air-gapped host's default mirrors) must not
    # stop us: whether the version can be had is what counts.
    # apt-get waits this long for dpkg's lock by itself (apt >= 1.9.11); for the lists and
    # archives locks, and apt-mark for dpkg's, wait_for_package_manager does.
    lock_timeout="DPkg::Lock::Timeout=$LOCK_WAIT"
    wait_for_package_manager
    updated=yes
    if ! apt-get -o "$lock_timeout" update -q > "$STAGING/apt-update.log" 2>&1; then
      if grep -q 'Could not get lock' "$STAGING/apt-update.log"; then pm_failed apt-update.log "apt-get update failed"; fi
      updated=no
      say "warning: apt-get update reported errors:"
      tail -n 5 "$STAGING/apt-update.log"
    fi
    package_version=$(apt-cache madison kubelet | awk -v v="$number" '$3 ~ "^" v "-" {print $3; exit}')
    [ -n "$package_version" ] || fail VersionNotFound "no kubelet package of version $number in $repo/deb/ (apt-get update succeeded: $updated)"
    wait_for_package_manager
    apt-mark unhold kubelet kubeadm kubectl >/dev/null 2>&1 || true
    # Our /etc/containerd/config.toml stays when a containerd package's own is newer.
    pm_run apt-install.log apt-get -o "$lock_timeout" install -y -q --allow-downgrades --allow-change-held-packages \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "kubelet=$package_version" "kubeadm=$package_version" "kubectl=$package_version" "$RUNTIME_PACKAGE" ||
      pm_failed apt-install.log "apt-get install of kubelet, kubeadm and kubectl $package_version and $RUNTIME_PACKAGE failed"
    # Held, so that an unattended upgrade never moves a node off the Machine's version.
    wait_for_package_manager
    pm_run apt-mark.log apt-mark hold kubelet kubeadm kubectl >/dev/null || pm_failed apt-mark.log "apt-mark hold kubelet kubeadm kubectl failed"
    ;;
  redhat)
    if command -v dnf >/dev/null 2>&1; then pm=dnf; else pm=yum; fi
    gpgkey="$repo/rpm/repodata/repomd.xml.key"
    if [ -n "$SIGNING_KEY" ]; then
      install_file "$STAGING/signing-key.asc" /etc/pki/rpm-gpg/capssh-kubernetes.asc 0644
      gpgkey=file:///etc/pki/rpm-gpg/capssh-kubernetes.asc
    fi
    # Excluded by default, so that a general update never moves them; installed explicitly below.
    put_file /etc/yum.repos.d/capssh-kubernetes.repo 0644 <<EOF
[capssh-kubernetes]
name=Kubernetes $minor (capssh)
baseurl=$repo/rpm/
enabled=1
gpgcheck=1
gpgkey=$gpgkey
exclude=kubelet kubeadm kubectl cri-tools kubernetes-cni
EOF
    # kubeadm's installation guide: SELinux permissive, so that containers can read the host's
    # files that the kubelet and static pods mount.
    if command -v getenforce >/dev/null 2>&1 && [ "$(getenforce)" = Enforcing ]; then
      setenforce 0
      sed -i 's/^SELINUX=enforcing$/SELINUX=permissive/' /etc/selinux/config
      say "set SELinux to permissive, as kubeadm's installation guide asks"
    fi
    packages="kubelet-$number kubeadm-$number kubectl-$number"
    # dnf 4 and yum wait for another run's lock forever, dnf 5 not at all: both get a bounded wait.
    wait_for_package_manager
    # shellcheck disable=SC2086
    if ! pm_run pm-install.log $pm install -y --disableexcludes=capssh-kubernetes $packages "$RUNTIME_PACKAGE"; then
      wait_for_package_manager
      # shellcheck disable=SC2086
      pm_run pm-downgrade.log $pm downgrade -y --disableexcludes=capssh-kubernetes $packages ||
        pm_failed pm-downgrade.log "$pm could not install kubelet, kubeadm and kubectl $number and $RUNTIME_PACKAGE"
    fi
    ;;
  *) fail UnsupportedOS "no package manager support for OS family $OS_FAMILY" ;;
esac

registry_install
containerd_config "$(pause_image)"
start_containerd
enable_kubelet
check_installed
write_stamp "$stamp"
say "prepared: Kubernetes $VERSION from $repo"
# --- end of packages.sh ---
