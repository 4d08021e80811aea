# shellcheck shell=sh
# Starts host-side job $JOB_ID at most once. Its script arrives on stdin; `mkdir run` is the
# atomic claim, so concurrent starters (replicas, a moved controller) start it once.
# Inputs: JOBS_DIR, JOB_ID, JOURNAL. Prints "started" or "already-started".
set -eu
: "${JOBS_DIR:?}" "${JOB_ID:?}" "${JOURNAL:?}"
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
if ! mkdir "$d/run" 2>/dev/null; then echo already-started; exit 0; fi
# Detached in its own session: it outlives this connection and capssh.
# shellcheck disable=SC2016
setsid sh -c 'sh "$1/script" > "$1/log" 2>&1; echo $? > "$1/exit.tmp"; mv -f "$1/exit.tmp" "$1/exit"' capssh-job "$d" < /dev/null > /dev/null 2>&1 &
echo $! > "$d/pid"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $JOB_ID started" >> "$JOURNAL"
echo started
