#!/usr/bin/env bash
# The main job until the lifecycle suite lands: publish this checkout as a clusterctl provider in
# a local repository, then render the provider components and a cluster with the real clusterctl,
# exactly as a user would with `clusterctl init` / `clusterctl generate cluster`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(hack/release-manifests.sh)
version=v$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=_artifacts/demo
mkdir -p "$out"
export CLUSTERCTL_DISABLE_VERSIONCHECK=true XDG_CONFIG_HOME=$PWD/_artifacts/xdg
clusterctl() { hack/tools/bin/clusterctl "$@" --config "$repo/clusterctl.yaml"; }

clusterctl generate provider --infrastructure "ssh:$version" > "$out/infrastructure-components.yaml"
SSH_CONTROL_PLANE_ENDPOINT_HOST=${SSH_CONTROL_PLANE_ENDPOINT_HOST:-198.18.0.100} \
  clusterctl generate cluster demo --infrastructure "ssh:$version" --target-namespace demo \
  --kubernetes-version v1.36.3 --control-plane-machine-count 3 --worker-machine-count 2 > "$out/cluster.yaml"

echo "provider repository:  $repo"
echo "components:           $out/infrastructure-components.yaml ($(grep -c '^kind:' "$out/infrastructure-components.yaml") objects)"
echo "cluster 'demo':       $out/cluster.yaml"
grep '^kind:' "$out/cluster.yaml" | sort | uniq -c | sed 's/^/  /'
