#!/usr/bin/env bash
# Runs the whole test suite. pytest exits 5 when it collects nothing: that is a failure here too,
# because a suite that runs no test proves nothing.
set -uo pipefail
PY=${1:-.venv/bin/python}
"$PY" -m pytest -q tests "${@:2}"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests (exit 5)" >&2
  exit 1
fi
exit "$rc"
