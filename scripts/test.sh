#!/usr/bin/env bash
# The test suite: unit + kernel tests from source, then the end-to-end tests again
# against the frozen binaries when they can be built. Exit 5 (no tests) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q tests
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
