#!/usr/bin/env bash
# The alpha sweep (the MNIST counterpart of the paper's Figure 5): alpha in 0.01..1 at lambda = 0.01.
set -euo pipefail
source "$(dirname "$0")/common.sh"

out=$("${CENTERLOSS[@]}" sweep --lambda 0.01 --alpha 0.01,0.1,0.5,1 "${RUN_ARGS[@]}" | tee /dev/stderr)
folder=$(sweep_folder "$out")
echo "Alpha sweep: $folder/grid_test.png, grid_train.png, summary.md, compactness.png"
