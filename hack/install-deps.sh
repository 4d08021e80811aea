#!/usr/bin/env bash
# Installs the Debian packages capssh's build and tests use. Idempotent; needs root.
set -euo pipefail
# debootstrap: the base rootfs of the systemd test nodes (e2e/src/nodes/rootfs.rs).
# libc6-dev: `gcc -static` builds the pause program of the e2e images (e2e/src/images.rs).
# ShellCheck: `make lint` checks every host script and hack script.
# ca-certificates: the CA bundle the manager images carry (make images, e2e/src/images.rs).
# iptables, ipset, busybox-static: the userland the e2e add-on images carry (kube-proxy, kube-router;
#   a shell for their init steps and for probes from test Pods), e2e/src/addon_images.rs.
# curl, netcat-openbsd, bind9-dnsutils, iproute2: what agnhost's image carries for the
#   Kubernetes e2e tests' shell commands (e2e/src/addon_images.rs).
packages=(git make gcc libc6-dev debootstrap pkg-config openssl openssh-client openssh-server iproute2 procps python3 sudo util-linux shellcheck ca-certificates iptables ipset busybox-static curl netcat-openbsd bind9-dnsutils binutils)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts must not start services (sshd on the machine itself): tests start their own.
  policy=/usr/sbin/policy-rc.d
  [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; trap 'rm -f "$policy"' EXIT; }
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "Go is needed to build the upstream test tools (hack/tools)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "Rust (cargo) is needed" >&2; exit 1; }
for component in fmt clippy; do
  cargo "$component" --version >/dev/null 2>&1 || { echo "cargo $component is needed: rustup component add ${component/fmt/rustfmt}" >&2; exit 1; }
done
