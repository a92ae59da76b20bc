# Sourced by the other scripts: make sure .venv exists with exactly the locked set of packages
# (requirements.lock) and the project installed on top, reinstalling when the lock or
# pyproject.toml changes. Needs only python3 (3.11+) and pip's package registry.
#
# To change a dependency: edit pyproject.toml, then `bash scripts/lock.sh` rewrites
# requirements.lock; commit both (tests/test_lock.py fails when they disagree).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "gemini-ledger needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
stamp=".venv/.installed-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> setting up .venv from requirements.lock (first run takes a minute or two)" >&2
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  # Every package at the locked version and hash, nothing resolved afresh; then the project
  # itself with --no-deps, so it cannot pull in anything the lock does not name.
  .venv/bin/python -m pip install --quiet --quiet --require-hashes --no-deps -r requirements.lock >&2
  .venv/bin/python -m pip install --quiet --quiet --no-deps -e . --config-settings editable_mode=compat >&2
  rm -f .venv/.installed-*
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
