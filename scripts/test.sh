#!/usr/bin/env bash
# The tests: lint, types, then pytest (PostgreSQL tests included).
#
#   bash scripts/test.sh              the fast tier: everything but the system tier (~5 min here)
#   bash scripts/test.sh --all        both tiers: the whole suite (what CI runs)
#   bash scripts/test.sh --system     the system tier alone: real Prefect servers and workers,
#                                     killed processes, whole nights, the demo, the schedules
#
# Any other argument goes to pytest (bash scripts/test.sh --all -x tests/proof). The tier is
# the `system` marker (tests/conftest.py adds it to `slow` and `alone` tests too).
source "$(dirname "$0")/_venv.sh"
tier=(-m "not system")
args=()
for arg in "$@"; do
  case "$arg" in
    --all) tier=() ;;
    --system) tier=(-m system) ;;
    *) args+=("$arg") ;;
  esac
done
echo "==> ruff" >&2
ruff check ledger flows emulator tests bench
ruff format --check ledger flows emulator tests bench
echo "==> mypy" >&2
mypy
echo "==> pytest" >&2
# Tests run in TEST_WORKERS processes (pytest-xdist; default 2, one per core of the machine
# the project is built on; the system tests start their own subprocesses). --dist loadgroup
# keeps the tests that share a module-scoped server on one worker (tests/conftest.py groups
# them), and the slow tests start first. TEST_WORKERS=0 runs everything in this process.
exec pytest -n "${TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder "${tier[@]}" "${args[@]}"
