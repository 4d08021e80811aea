# shellcheck shell=sh
# What the host holds of some jobs, in one round trip. Inputs: JOBS_DIR, JOB_IDS (space-separated
# ids), PATHS (newline-separated). Prints a marker line (whatever a login shell printed before it
# is not ours), then a line per job id, then "yes" or "no" per path. Per job:
#   absent | running AGE | exit CODE AGE [succeeded] | unreadable AGE | lost AGE
# AGE: seconds since the job started, by the host's clock. "succeeded": capssh recorded its
# success on disk (it outlives /run). "lost": started, not finished, and its process is gone —
# or the PID now names another process (after a reboot, or PIDs wrapping around).
set -u
: "${JOBS_DIR:?}" "${JOB_IDS?}" "${PATHS?}"
echo capssh-records
now=$(date +%s)
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
finished() { # dir age
  code=$(cat "$1/exit" 2>/dev/null)
  case "$code" in
    '' | *[!0-9]*) echo "unreadable $2" ;;
    *) if [ -e "$1/succeeded" ]; then echo "exit $code $2 succeeded"; else echo "exit $code $2"; fi ;;
  esac
}
for id in $JOB_IDS; do
  d="$JOBS_DIR/$id"
  if [ ! -d "$d/run" ]; then echo absent; continue; fi
  age=$((now - $(stat -c %Y "$d/run" 2>/dev/null || echo "$now")))
  if [ -f "$d/exit" ]; then finished "$d" "$age"; continue; fi
  pid=$(cat "$d/pid" 2>/dev/null)
  # Between `mkdir run` and writing the PID: just starting.
  if [ -z "$pid" ]; then echo "running $age"; continue; fi
  if [ -s "$d/boot" ] && [ -n "$boot" ] && [ "$(cat "$d/boot")" != "$boot" ]; then echo "lost $age"; continue; fi
  stat=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null)
  state=$(echo "$stat" | cut -c1)
  started=$(echo "$stat" | cut -d' ' -f20)
  recorded=$(cat "$d/started" 2>/dev/null)
  # Alive means a process in any state but zombie (an unreaped exit is not running).
  if [ -n "$state" ] && [ "$state" != Z ] && { [ -z "$recorded" ] || [ "$recorded" = "$started" ]; }; then
    echo "running $age"
  elif [ -f "$d/exit" ]; then finished "$d" "$age"
  else echo "lost $age"
  fi
done
printf '%s\n' "$PATHS" | while IFS= read -r path; do
  [ -n "$path" ] || continue
  if [ -e "$path" ]; then echo yes; else echo no; fi
done
