#!/usr/bin/env bash
# Builds the upstream tools listed in tools.txt from their pinned Go modules.
#
#   hack/tools/build.sh              build every tool (skips what is cached)
#   hack/tools/build.sh NAME...      build only these
#   hack/tools/build.sh --module-dir capi   print where a module's source is (for its manifests)
#
# Binaries land in hack/tools/bin/<name>-<version> (the cache, keyed by version) with a link
# hack/tools/bin/<name> to the current one. Go's own module and build caches make rebuilds cheap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$here/bin
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"

if [ "${1:-}" = "--module-dir" ]; then
  # The source tree of the module a tools module is named after (e.g. Cluster API's manifests).
  case "$2" in
    capi) mod=sigs.k8s.io/cluster-api ;;
    k8s|k8s-next) mod=k8s.io/kubernetes ;;
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
  esac
  echo "$flags"
}

mkdir -p "$bin"
wanted=" $* "
built=0
while read -r name module pkg; do
  case "$name" in ''|'#'*) continue ;; esac
  if [ $# -gt 0 ] && [[ "$wanted" != *" $name "* ]]; then continue; fi
  version=$(cd "$here/$module" && go list -f '{{.Module.Version}}' "$pkg")
  target="$bin/$name-$version"
  if [ ! -x "$target" ]; then
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
