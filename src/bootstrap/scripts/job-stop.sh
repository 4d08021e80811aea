# shellcheck shell=sh
# Stops every running bootstrap and preparation job on the host (their whole process groups:
# kubeadm and what it started) and waits for them, so that a reset never runs beside a
# `kubeadm join` that could still make the host a node of the old cluster. Only one machine holds
# a host at a time, so these are the jobs of the machine being deleted.
# Inputs: JOBS_DIR, GRACE (seconds between TERM and KILL). Prints "stopped ID" per job stopped.
set -u
: "${JOBS_DIR:?}" "${GRACE:?}"
stopping=""
for d in "$JOBS_DIR"/bootstrap-* "$JOBS_DIR"/prepare-*; do
  if [ ! -d "$d/run" ] || [ -f "$d/exit" ] || [ ! -s "$d/pid" ]; then continue; fi
  pid=$(cat "$d/pid")
  started=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20)
  # Gone, or the PID now names another process: nothing of the job is left to stop.
  [ -n "$started" ] || continue
  if [ -s "$d/started" ] && [ "$(cat "$d/started")" != "$started" ]; then continue; fi
  kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  stopping="$stopping $pid:$d"
done
[ -n "$stopping" ] || exit 0
waited=0
while [ "$waited" -lt "$GRACE" ]; do
  alive=""
  for entry in $stopping; do
    if kill -0 "-${entry%%:*}" 2>/dev/null; then alive=yes; fi
  done
  [ -n "$alive" ] || break
  sleep 1
  waited=$((waited + 1))
done
for entry in $stopping; do
  kill -KILL "-${entry%%:*}" 2>/dev/null
  d=${entry#*:}
  # The job's own wrapper died with it: record how it ended (128 + SIGTERM).
  if [ ! -f "$d/exit" ]; then echo 143 > "$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"; fi
  echo "stopped $(basename "$d")"
done
