# shellcheck shell=sh
# The end of a job's log: at most LINES lines and at most BYTES bytes (redacted by capssh).
# Inputs: JOBS_DIR, JOB_ID, LINES, BYTES.
: "${JOBS_DIR:?}" "${JOB_ID:?}" "${LINES:?}" "${BYTES:?}"
tail -n "$LINES" "$JOBS_DIR/$JOB_ID/log" 2>/dev/null | tail -c "$BYTES" || true
