#!/usr/bin/env bash
# Builds capssh's previous release from its git commit, for the `clusterctl upgrade` e2e:
#
#   _artifacts/previous/<commit>/capssh                          the manager binary
#   _artifacts/previous/<commit>/release/infrastructure-components.yaml, metadata.yaml, templates
#
# The release is named in hack/previous-release ("<version> <commit>"). The source comes from
# this clone's history (`git archive`); a patch release's backported fixes are in
# hack/previous-release.patch, applied on top when it exists. It is built with Cargo's own target
# folder beside it, and kept: a second run only prints the folder. stdout carries exactly one
# line, the folder.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
read -r version commit < <(grep -v "^#" "$root/hack/previous-release")
patch=$root/hack/previous-release.patch
key=$commit
if [ -f "$patch" ]; then
  key=$commit-$(sha256sum "$patch" | cut -c1-12)
fi
out=$root/_artifacts/previous/$version-$key
if [ -x "$out/capssh" ] && [ -f "$out/release/infrastructure-components.yaml" ]; then
  echo "$out"
  exit 0
fi

git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null || {
  echo "commit $commit of release $version is not in this clone's history (a shallow clone?): git fetch --unshallow" >&2
  exit 1
}
rm -rf "$out/src"
mkdir -p "$out/src"
git -C "$root" archive "$commit" | tar -x -C "$out/src"
if [ -f "$patch" ]; then
  # Outside any repository (this clone is one): inside it, git apply would skip every path.
  GIT_CEILING_DIRECTORIES=$out git -C "$out/src" apply "$patch"
fi
# Its release script looks for kustomize in its own hack/tools/bin.
mkdir -p "$out/src/hack/tools"
ln -sfn "$root/hack/tools/bin" "$out/src/hack/tools/bin"

echo "building capssh $version ($commit) ..." >&2
(cd "$out/src" && CARGO_TARGET_DIR=$root/target/previous cargo build --locked -p capssh --bin capssh >&2)
cp "$root/target/previous/debug/capssh" "$out/capssh.tmp" && mv -f "$out/capssh.tmp" "$out/capssh"

repo=$(cd "$out/src" && IMAGE=ghcr.io/capssh/capssh:$version hack/release-manifests.sh "$version")
rm -rf "$out/release"
cp -r "$repo/infrastructure-ssh/$version" "$out/release"
rm -rf "$out/src"
echo "$out"
