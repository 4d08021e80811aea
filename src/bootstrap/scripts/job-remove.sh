# shellcheck shell=sh
# Forgets a finished job: its folder goes (the journal keeps its start), so its id may run again.
# Inputs: JOBS_DIR, JOB_ID.
set -eu
: "${JOBS_DIR:?}" "${JOB_ID:?}"
rm -rf "${JOBS_DIR:?}/${JOB_ID:?}"
