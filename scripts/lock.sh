#!/usr/bin/env bash
# Rewrite requirements.lock from pyproject.toml (runtime and test dependencies, with hashes).
# Run after editing a dependency in pyproject.toml; commit both files together.
# uv is used only here, from a throwaway environment, at a pinned version.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
tool="${TMPDIR:-/tmp}/gemini-ledger-lock-tool"
[ -x "$tool/bin/uv" ] || { python3 -m venv "$tool" && "$tool/bin/pip" install --quiet uv==0.13.8; }
"$tool/bin/uv" pip compile pyproject.toml --extra test --python-version 3.11 \
  --generate-hashes --no-header --quiet -o requirements.lock "$@"
echo "requirements.lock rewritten; run bash scripts/test.sh, then commit pyproject.toml and requirements.lock" >&2
