#!/usr/bin/env bash
# Builds the upstream tools listed in tools.txt from their pinned Go modules.
#
#   hack/tools/build.sh              build every tool (skips what is cached)
#   hack/tools/build.sh NAME...      build only these
#   hack/tools/build.sh --module-dir capi   print where a module's source is (for its manifests)
#
# Binaries land in hack/tools/bin/<name>-<version> (the cache, keyed by version) with a link
# hack/tools/bin/<name> to the current one. Go's own module and build caches make rebuilds cheap.
# A module of this repository (tools.txt names its folder relative to hack/tools, e.g.
# ../../e2e/capi) is built only when named (hack/tools/build.sh capi-e2e.test), never by a plain
# `make tools`. It has no version: its key is src-<hash of its go.mod, go.sum and *.go files>, and
# building a new one removes that tool's older src-* binaries. A tools.txt line ending in
# `on-request` (the benchmark's peer) is likewise built only when named.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$here/bin
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"

if [ "${1:-}" = "--module-dir" ]; then
  # The source tree of the module a tools module is named after (e.g. Cluster API's manifests).
  case "$2" in
    capi) mod=sigs.k8s.io/cluster-api ;;
    k8s|k8s-next) mod=k8s.io/kubernetes ;;
    cert-manager) mod=github.com/cert-manager/cert-manager ;;
    byoh) mod=github.com/vmware-tanzu/cluster-api-provider-bringyourownhost ;;
    *) echo "unknown module $2" >&2; exit 2 ;;
  esac
  cd "$here/$2" && go mod download "$mod" && exec go list -m -f '{{.Dir}}' "$mod"
fi

# Version stamps: Kubernetes and Cluster API refuse to talk to a server that reports v0.0.0.
ldflags_for() { # module-kind version
  local kind=$1 v=$2 flags="-s -w" minor
  minor=$(echo "$v" | cut -d. -f2)
  case $kind in
    k8s|k8s-next)
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
        flags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
      done ;;
    capi)
      for k in gitVersion=$v gitMajor=1 gitMinor=$minor gitTreeState=clean; do
        flags+=" -X sigs.k8s.io/cluster-api/version.$k"
      done ;;
    cert-manager) flags+=" -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$v" ;;
  esac
  echo "$flags"
}

# A short hash of a module folder's Go sources (names and contents of go.mod, go.sum, *.go).
source_hash() { # dir
  (cd "$1" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
}

mkdir -p "$bin"
wanted=" $* "
built=0
while read -r name module pkg when; do
  case "$name" in ''|'#'*) continue ;; esac
  if [ $# -gt 0 ] && [[ "$wanted" != *" $name "* ]]; then continue; fi
  # This repository's own modules, and tools marked on-request, are built only when named.
  if [ $# -eq 0 ] && { [[ "$module" == ../* ]] || [ "$when" = on-request ]; }; then continue; fi
  version=$(cd "$here/$module" && go list -f '{{.Module.Version}}' "$pkg")
  # The main module (sources in this repository) has no version: key it by its sources.
  [ -n "$version" ] || version=src-$(source_hash "$here/$module")
  target="$bin/$name-$version"
  if [ ! -x "$target" ]; then
    case $version in src-*) rm -f "$bin/$name"-src-* ;; esac
    echo "building $name $version ($pkg)" >&2
    start=$SECONDS
    case $name in
      # A test binary (Kubernetes' e2e.test): the package's tests, compiled.
      *.test) (cd "$here/$module" && go test -c -ldflags "$(ldflags_for "$module" "$version")" -o "$target.tmp" "$pkg") ;;
      *) (cd "$here/$module" && go build -ldflags "$(ldflags_for "$module" "$version")" -o "$target.tmp" "$pkg") ;;
    esac
    mv "$target.tmp" "$target"
    echo "built $name in $((SECONDS - start))s" >&2
    built=$((built + 1))
  fi
  case $module in *-next) ;; *) ln -sfn "$name-$version" "$bin/$name" ;; esac
done < "$here/tools.txt"
echo "tools ready in $bin ($built built)" >&2
