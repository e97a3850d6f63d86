#!/usr/bin/env bash
# Run the whole test suite inside the project environment (after scripts/bootstrap.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
set +u  # ROS setup files read unset variables
. scripts/env.sh
set -u
# Test processes are short-lived: keep freed pages instead of returning them (see env.sh).
export TCMALLOC_RELEASE_RATE="${TCMALLOC_RELEASE_RATE:-0}"
# A fresh DDS domain per run keeps concurrent runs on one machine apart.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"
set +e
# One worker per core (-n 0 on the command line runs in this process instead); tests marked
# xdist_group share an expensive fixture and go to the same worker.
python -m pytest -n "${MONOOCC_TEST_WORKERS:-auto}" --dist loadgroup "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
