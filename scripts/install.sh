#!/usr/bin/env bash
# Create .venv with exactly the locked packages and the project (what the other scripts do
# first); for deploying, where you run Prefect's own commands from .venv/bin.
source "$(dirname "$0")/_venv.sh"
echo "==> .venv is ready: .venv/bin/gemini-ledger --help" >&2
