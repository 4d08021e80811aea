# shellcheck shell=sh
# Records on disk that a job succeeded: its proof may live in /run (Cluster API's sentinel), which
# a reboot empties, and a later judge (a moved or restarted controller) must reach the same verdict.
# Inputs: JOBS_DIR, JOB_ID.
set -eu
: "${JOBS_DIR:?}" "${JOB_ID:?}"
if [ -d "$JOBS_DIR/$JOB_ID/run" ]; then touch "$JOBS_DIR/$JOB_ID/succeeded"; fi
