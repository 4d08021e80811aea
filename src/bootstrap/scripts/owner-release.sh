# shellcheck shell=sh
# An SSHHost deleted while free lets go of its box: the owner record goes if it still names
# this SSHHost (by uid; a newer SSHHost recorded since keeps its record). Inputs: OWNER_FILE,
# OWNER_UID. Prints `owner=removed`, `owner=absent` or `owner=other`.
set -eu
: "${OWNER_FILE:?}" "${OWNER_UID:?}"
if [ ! -e "$OWNER_FILE" ]; then
  echo "owner=absent"
elif [ "$(sed -n 's/^uid=//p' "$OWNER_FILE" | head -n 1)" = "$OWNER_UID" ]; then
  rm -f "$OWNER_FILE"
  echo "owner=removed"
else
  echo "owner=other"
fi
