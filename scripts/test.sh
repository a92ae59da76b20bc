#!/usr/bin/env bash
# The whole test suite: lint, types, then every test (PostgreSQL ones included).
source "$(dirname "$0")/_venv.sh"
echo "==> ruff" >&2
ruff check ledger flows emulator tests bench
ruff format --check ledger flows emulator tests bench
echo "==> mypy" >&2
mypy
echo "==> pytest" >&2
exec pytest "$@"
