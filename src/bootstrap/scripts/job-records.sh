# shellcheck shell=sh
# What the host holds of some jobs, in one round trip: a line per job id, then a line per path.
# Inputs: JOBS_DIR, JOB_IDS (space-separated ids), PATHS (newline-separated).
# Per job: "absent", "running AGE", "exit CODE AGE" or "lost AGE", where AGE is how many
# seconds ago the job started, by the host's own clock. Per path: "yes" or "no".
set -u
: "${JOBS_DIR:?}" "${JOB_IDS?}" "${PATHS?}"
now=$(date +%s)
for id in $JOB_IDS; do
  d="$JOBS_DIR/$id"
  if [ ! -d "$d/run" ]; then echo absent; continue; fi
  age=$((now - $(stat -c %Y "$d/run" 2>/dev/null || echo "$now")))
  if [ -f "$d/exit" ]; then echo "exit $(cat "$d/exit") $age"; continue; fi
  if [ ! -s "$d/pid" ]; then echo "running $age"; continue; fi
  # Alive means a process in any state but zombie (an unreaped exit is not running).
  state=$(sed 's/.*) //' "/proc/$(cat "$d/pid")/stat" 2>/dev/null | cut -c1)
  if [ -n "$state" ] && [ "$state" != Z ]; then echo "running $age"
  elif [ -f "$d/exit" ]; then echo "exit $(cat "$d/exit") $age"
  else echo "lost $age"
  fi
done
printf '%s\n' "$PATHS" | while IFS= read -r path; do
  [ -n "$path" ] || continue
  if [ -e "$path" ]; then echo yes; else echo no; fi
done
