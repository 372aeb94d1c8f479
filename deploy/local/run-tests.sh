#!/usr/bin/env bash
# Runs the whole test suite. Fixtures start every service the tests use (engine,
# Redis, PostgreSQL, registry, web, workers) on loopback and stop them after.
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p artifacts
.venv/bin/pytest -ra "$@"
status=$?
# pytest exits 5 when it collected no test: that is a failure here, not a pass.
if [ "$status" -eq 5 ]; then
  echo "run-tests: pytest found no tests" >&2
  exit 1
fi
exit "$status"
