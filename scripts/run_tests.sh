#!/usr/bin/env bash
# Runs the whole test suite on PYTEST_WORKERS processes (pytest-xdist; default 2, the CI machine's
# cores; PYTEST_WORKERS=0 runs it in this process). `--dist loadfile` keeps each test file on one
# worker, so a module's expensive fixtures (a trained run, a built dataset) are made once;
# `--no-loadscope-reorder` hands the files out in collection order, which tests/conftest.py starts with
# the files holding `slow` tests (xdist's default reorder sorts files by their number of tests, which
# put the longest single-test files last, each then running alone at the end).
# pytest exits 5 when it collects nothing: that is a failure here too, because a suite that runs no
# test proves nothing.
set -uo pipefail
PY=${1:-.venv/bin/python}
WORKERS=${PYTEST_WORKERS:-2}
if [ "$WORKERS" -gt 0 ]; then
  "$PY" -m pytest -q -n "$WORKERS" --dist loadfile --no-loadscope-reorder tests "${@:2}"
else
  "$PY" -m pytest -q tests "${@:2}"
fi
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests (exit 5)" >&2
  exit 1
fi
exit "$rc"
