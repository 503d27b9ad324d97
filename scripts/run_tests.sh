#!/usr/bin/env bash
# Runs pytest from the project venv; pytest's "no tests collected" (exit 5) is a failure here too,
# because a suite that selects nothing has tested nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5); check the -m/-k selection" >&2
  exit 1
fi
exit "$rc"
