#!/usr/bin/env bash
# The main job on the embedded default: fetch ml-100k, train the SASRec baseline, print metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/dnsrec-edge train --dataset ml-100k --out runs/quickstart "$@"
