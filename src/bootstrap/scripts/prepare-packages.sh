# --- mode Packages (packages.sh) ---
# containerd from the host's own repositories; kubelet, kubeadm and kubectl from the Kubernetes
# package repository of the version's minor release (pkgs.k8s.io layout), pinned to the version.
need_systemd
make_staging
minor=$(echo "$VERSION" | sed -E 's/^(v[0-9]+\.[0-9]+).*/\1/')
repo="$REPOSITORY_URL/core:/stable:/$minor"

stamp="capssh-preparation 1
mode=Packages
version=$VERSION
repository=$repo
runtime=$RUNTIME_PACKAGE"
if already_prepared "$stamp"; then
  say "already prepared: Kubernetes $VERSION from $repo; nothing changed"
  exit 0
fi

host_setup
warn_missing_tools
number=${VERSION#v}
case "$OS_FAMILY" in
  debian)
    export DEBIAN_FRONTEND=noninteractive
    pick_downloader
    # apt reads an ASCII-armoured key named *.asc directly: no gpg needed on the host.
    fetch "$repo/deb/Release.key" "$STAGING/Release.key" || fail DownloadFailed "cannot download $repo/deb/Release.key"
    install_file "$STAGING/Release.key" /etc/apt/keyrings/capssh-kubernetes.asc 0644
    put_file /etc/apt/sources.list.d/capssh-kubernetes.list 0644 <<EOF
deb [signed-by=/etc/apt/keyrings/capssh-kubernetes.asc] $repo/deb/ /
EOF
    # An unrelated source that cannot be reached (an air-gapped host's default mirrors) must not
    # stop us: whether the version can be had is what counts.
    updated=yes
    if ! apt-get update -q > "$STAGING/apt-update.log" 2>&1; then
      updated=no
      say "warning: apt-get update reported errors:"
      tail -n 5 "$STAGING/apt-update.log"
    fi
    package_version=$(apt-cache madison kubelet | awk -v v="$number" '$3 ~ "^" v "-" {print $3; exit}')
    [ -n "$package_version" ] || fail VersionNotFound "no kubelet package of version $number in $repo/deb/ (apt-get update succeeded: $updated)"
    apt-mark unhold kubelet kubeadm kubectl >/dev/null 2>&1 || true
    # Our /etc/containerd/config.toml stays when a containerd package's own is newer.
    apt-get install -y -q --allow-downgrades --allow-change-held-packages \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "kubelet=$package_version" "kubeadm=$package_version" "kubectl=$package_version" "$RUNTIME_PACKAGE" ||
      fail PackageManagerFailed "apt-get install of kubelet, kubeadm and kubectl $package_version and $RUNTIME_PACKAGE failed"
    # Held, so that an unattended upgrade never moves a node off the Machine's version.
    apt-mark hold kubelet kubeadm kubectl >/dev/null
    ;;
  redhat)
    if command -v dnf >/dev/null 2>&1; then pm=dnf; else pm=yum; fi
    # Excluded by default, so that a general update never moves them; installed explicitly below.
    put_file /etc/yum.repos.d/capssh-kubernetes.repo 0644 <<EOF
[capssh-kubernetes]
name=Kubernetes $minor (capssh)
baseurl=$repo/rpm/
enabled=1
gpgcheck=1
gpgkey=$repo/rpm/repodata/repomd.xml.key
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
    # shellcheck disable=SC2086
    $pm install -y --disableexcludes=capssh-kubernetes $packages "$RUNTIME_PACKAGE" ||
      $pm downgrade -y --disableexcludes=capssh-kubernetes $packages ||
      fail PackageManagerFailed "$pm could not install kubelet, kubeadm and kubectl $number and $RUNTIME_PACKAGE"
    ;;
  *) fail UnsupportedOS "no package manager support for OS family $OS_FAMILY" ;;
esac

containerd_config "$(pause_image)"
start_containerd
enable_kubelet
check_installed
write_stamp "$stamp"
say "prepared: Kubernetes $VERSION from $repo"
# --- end of packages.sh ---
