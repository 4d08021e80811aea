# shellcheck shell=sh
# Starts host-side job $JOB_ID at most once. Its script arrives on stdin; `mkdir run` is the
# atomic claim, so concurrent starters (replicas, a moved controller) start it once.
# Inputs: JOBS_DIR, JOB_ID, JOURNAL, REQUIRED (paths that must exist when the job exits 0, one
# per line; may be empty). Prints "started" or "already-started" as its last line.
set -eu
: "${JOBS_DIR:?}" "${JOB_ID:?}" "${JOURNAL:?}"
REQUIRED=${REQUIRED:-}
d="$JOBS_DIR/$JOB_ID"
umask 077
mkdir -p "$JOBS_DIR"
chmod 0700 "$(dirname "$JOBS_DIR")" "$JOBS_DIR"
mkdir -p "$d"
if [ -d "$d/run" ]; then echo already-started; exit 0; fi
# Concurrent starters each write their own temp file; the rename is atomic and the content the same.
tmp="$d/script.tmp.$$"
cat > "$tmp"
if [ -d "$d/run" ]; then rm -f "$tmp"; echo already-started; exit 0; fi
mv -f "$tmp" "$d/script"
if [ -n "$REQUIRED" ]; then printf '%s\n' "$REQUIRED" > "$d/required"; fi
if ! mkdir "$d/run" 2>/dev/null; then echo already-started; exit 0; fi
# Which boot this is, and (below) when the process started in it: after a reboot, or once PIDs
# wrap around, the PID may name another process, which must not read as the job still running.
cat /proc/sys/kernel/random/boot_id > "$d/boot" 2>/dev/null || true
# Detached in its own session (its PID is its process group; dash's kill takes "-PGID", not "--"): it outlives this connection and
# capssh, and can be stopped as a whole. An exit status that cannot be written (a full disk)
# leaves an empty file, which capssh reports as such. On exit 0 with every required path there,
# success is recorded on disk before the exit status: a reboot right after (which empties /run)
# cannot turn it into a failure.
# shellcheck disable=SC2016
setsid sh -c 'sh "$1/script" > "$1/log" 2>&1; s=$?
if [ "$s" = 0 ] && [ -f "$1/required" ]; then
  ok=yes; while IFS= read -r p; do [ -z "$p" ] || [ -e "$p" ] || ok=; done < "$1/required"
  [ -z "$ok" ] || touch "$1/succeeded"
fi
echo "$s" > "$1/exit.tmp"; mv -f "$1/exit.tmp" "$1/exit"' capssh-job "$d" < /dev/null > /dev/null 2>&1 &
pid=$!
echo "$pid" > "$d/pid"
# Field 22 of stat (start time in clock ticks since boot); the comm field may hold spaces.
sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20 > "$d/started" || true
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $JOB_ID started" >> "$JOURNAL"
echo started
