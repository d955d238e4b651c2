#!/usr/bin/env bash
# The alpha sweep (the MNIST counterpart of the paper's Figure 5): alpha at lambda = 0.01, with SEEDS.
#   ALPHAS      the values of alpha (default: 0.01,0.1,0.5,1)
set -euo pipefail
source "$(dirname "$0")/common.sh"
ALPHAS=${ALPHAS:-0.01,0.1,0.5,1}

out=$("${CENTERLOSS[@]}" sweep --lambda 0.01 --alpha "$ALPHAS" --seed "$SEEDS" "${RUN_ARGS[@]}" | tee -a /dev/stderr)
folder=$(sweep_folder "$out")
echo "Alpha sweep: $folder/ ($(sweep_files "$folder"))"
