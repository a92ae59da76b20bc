#!/usr/bin/env bash
# The whole test suite: lint, types, then every test (PostgreSQL ones included).
source "$(dirname "$0")/_venv.sh"
echo "==> ruff" >&2
ruff check ledger flows emulator tests bench
ruff format --check ledger flows emulator tests bench
echo "==> mypy" >&2
mypy
echo "==> pytest" >&2
# Tests run in TEST_WORKERS processes (pytest-xdist; default 2, one per core of the machine
# the project is built on; the slow tests start their own subprocesses). --dist loadgroup
# keeps the tests that share a module-scoped server on one worker (tests/conftest.py groups
# them), and the slow tests start first. TEST_WORKERS=0 runs everything in this process.
exec pytest -n "${TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder "$@"
