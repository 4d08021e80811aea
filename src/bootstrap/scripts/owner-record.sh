# shellcheck shell=sh
# Which SSHHost stands for this box: the first to probe it writes OWNER_FILE, and a probe of
# another SSHHost finds it there. Inputs: OWNER_FILE, OWNER_NAMESPACE, OWNER_NAME, OWNER_UID.
# Prints `owner=new`, `owner=same`, `owner=moved` (same namespace/name, new uid: clusterctl
# move; the record is updated) or `owner=other`, then the record found as recorded_* lines.
set -eu
: "${OWNER_FILE:?}" "${OWNER_NAMESPACE:?}" "${OWNER_NAME:?}" "${OWNER_UID:?}"
dir=$(dirname "$OWNER_FILE")
mkdir -p "$dir"
chmod 0700 "$dir"
tmp=$(mktemp "$OWNER_FILE.XXXXXX")
trap 'rm -f "$tmp"' EXIT
printf 'namespace=%s\nname=%s\nuid=%s\n' "$OWNER_NAMESPACE" "$OWNER_NAME" "$OWNER_UID" >"$tmp"
# link(2) fails when the file exists: of two SSHHosts probing the box at once, one wins.
if ln "$tmp" "$OWNER_FILE" 2>/dev/null; then
  echo "owner=new"
  exit 0
fi
field() { sed -n "s/^$1=//p" "$OWNER_FILE" | head -n 1; }
namespace=$(field namespace)
name=$(field name)
uid=$(field uid)
if [ "$namespace" = "$OWNER_NAMESPACE" ] && [ "$name" = "$OWNER_NAME" ]; then
  if [ "$uid" = "$OWNER_UID" ]; then
    echo "owner=same"
  else
    mv -f "$tmp" "$OWNER_FILE"
    echo "owner=moved"
  fi
else
  echo "owner=other"
fi
printf 'recorded_namespace=%s\nrecorded_name=%s\nrecorded_uid=%s\n' "$namespace" "$name" "$uid"
