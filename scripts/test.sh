#!/usr/bin/env bash
# The test command: bootstrap, then run every test that needs no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -m "not gpu" "$@"
