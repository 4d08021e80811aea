# --- mode Artifacts (artifacts.sh) ---
# Everything is downloaded into a staging folder and every SHA-256 checked before anything is
# installed: a tampered or truncated file means nothing on the host changes.
need_systemd
pick_downloader
command -v sha256sum >/dev/null 2>&1 || fail MissingTool "the host has no sha256sum (coreutils) to verify downloads with"
make_staging
registry_check_all
base="$MIRROR_URL/$VERSION/$ARCH"
sums="$STAGING/SHA256SUMS"

fetch "$base/SHA256SUMS" "$sums" || fail DownloadFailed "cannot download $VERSION/$ARCH/SHA256SUMS from the mirror (is this version and architecture in it?)"
sums_sha=$(sha256_of "$sums")
if [ -n "$SUMS_PIN" ] && [ "$sums_sha" != "$SUMS_PIN" ]; then
  fail ChecksumMismatch "$VERSION/$ARCH/SHA256SUMS has SHA-256 $sums_sha, but artifacts.checksumsSHA256 pins $SUMS_PIN; nothing was installed"
fi

stamp="capssh-preparation 1
mode=Artifacts
version=$VERSION
arch=$ARCH
sha256sums=$sums_sha"
[ -z "$REGISTRY_STAMP" ] || stamp="$stamp
registry=$REGISTRY_STAMP"
if already_prepared "$stamp"; then
  say "already prepared: Kubernetes $VERSION from this mirror's SHA256SUMS ($sums_sha); nothing changed"
  registry_install
  exit 0
fi

# Every line: a SHA-256, a space, a space or '*', and one file directly under bin/, cni/ or images/.
bad=$(grep -Ev '^[0-9a-f]{64} [ *](bin|cni|images)/[A-Za-z0-9_+-][A-Za-z0-9._+-]*$' "$sums" | grep -v '^[[:space:]]*$' | head -n 1 || true)
[ -z "$bad" ] || fail InvalidMirror "SHA256SUMS has a line capssh does not accept (expected '<sha256>  bin|cni|images/<name>'): $bad"
paths=$(sed -E 's/^[0-9a-f]{64} [ *]//' "$sums" | grep -v '^[[:space:]]*$')
for required in bin/kubeadm bin/kubelet bin/kubectl bin/containerd bin/containerd-shim-runc-v2 bin/ctr bin/runc; do
  printf '%s\n' "$paths" | grep -qx "$required" || fail InvalidMirror "$VERSION/$ARCH/SHA256SUMS lists no $required"
done
printf '%s\n' "$paths" | grep -q '^cni/' || fail InvalidMirror "$VERSION/$ARCH/SHA256SUMS lists no CNI plugin under cni/"

say "downloading $(printf '%s\n' "$paths" | wc -l) files of Kubernetes $VERSION/$ARCH"
for path in $paths; do
  fetch "$base/$path" "$STAGING/files/$path" || fail DownloadFailed "cannot download $VERSION/$ARCH/$path from the mirror; nothing was installed"
done
while read -r expected path; do
  [ -n "$expected" ] || continue
  path=${path#\*}
  seen=$(sha256_of "$STAGING/files/$path")
  [ "$seen" = "$expected" ] || fail ChecksumMismatch "$VERSION/$ARCH/$path has SHA-256 $seen, SHA256SUMS says $expected; nothing was installed"
done < "$sums"
say "every SHA-256 matches"

chmod 0755 "$STAGING"/files/bin/* "$STAGING"/files/cni/*
for tool in kubelet kubeadm kubectl; do
  seen=$(version_of "$tool" "$STAGING/files/bin/$tool")
  version_matches "$seen" || fail MirrorVersionMismatch "the mirror's $VERSION/$ARCH/bin/$tool reports ${seen:-no version}, but the Machine's spec.version is $VERSION; nothing was installed"
done

# Install: the host setup, then every file (unchanged ones are left alone), then services.
host_setup
warn_missing_tools
for file in "$STAGING"/files/bin/*; do
  install_file "$file" "/usr/local/bin/${file##*/}" 0755
done
for file in "$STAGING"/files/cni/*; do
  install_file "$file" "/opt/cni/bin/${file##*/}" 0755
done

put_file /etc/systemd/system/containerd.service 0644 <<'EOF'
# Written by capssh host preparation (mode Artifacts).
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
EOF
put_file /etc/systemd/system/kubelet.service 0644 <<'EOF'
# Written by capssh host preparation (mode Artifacts).
[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target containerd.service

[Service]
ExecStart=/usr/local/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
EOF
# The drop-in kubeadm's packages ship, for this binary's path: kubeadm init/join write the
# files it reads.
put_file /etc/systemd/system/kubelet.service.d/10-kubeadm.conf 0644 <<'EOF'
# Written by capssh host preparation (mode Artifacts).
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
EOF
units="/etc/systemd/system/containerd.service /etc/systemd/system/kubelet.service /etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
registry_install
containerd_config "$(pause_image)"
# shellcheck disable=SC2086 # one word per unit file
daemon_reload $units
start_containerd /etc/systemd/system/containerd.service /usr/local/bin/containerd /usr/local/bin/containerd-shim-runc-v2 /usr/local/bin/runc

for image in "$STAGING"/files/images/*; do
  [ -f "$image" ] || continue
  say "importing ${image##*/}"
  ctr -n k8s.io images import "$image" >/dev/null || fail ImageImportFailed "ctr -n k8s.io images import $VERSION/$ARCH/images/${image##*/} failed"
done

enable_kubelet /usr/local/bin/kubelet /etc/systemd/system/kubelet.service /etc/systemd/system/kubelet.service.d/10-kubeadm.conf
check_installed
write_stamp "$stamp"
say "prepared: Kubernetes $VERSION, containerd $(containerd --version 2>/dev/null | awk '{print $3}')"
# --- end of artifacts.sh ---
