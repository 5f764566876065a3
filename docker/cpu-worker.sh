#!/usr/bin/env bash
# The cpu worker container runs the Dask scheduler and a Prefect process worker (pool `cpu`).
set -euo pipefail
dask scheduler --host 0.0.0.0 --port 8786 --dashboard-address :8787 &
scheduler=$!
trap 'kill $scheduler' EXIT
prefect work-pool create cpu --type process 2>/dev/null || true
exec prefect worker start --pool cpu --type process
