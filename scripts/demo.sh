#!/usr/bin/env bash
# The main job: a whole night against the local Gemini emulator, then the morning report.
source "$(dirname "$0")/_venv.sh"
exec gemini-ledger demo "$@"
