#!/usr/bin/env bash
# The main job on the embedded default: ml-100k through data, baseline, search, prune,
# fine-tune, export, compile (x86_64 + arm64), bench on this host, calibrate and report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/dnsrec-edge pipeline "$@"
