#!/usr/bin/env bash
# The paper's Figure 3: softmax + lambda * center loss, alpha = 0.5, four values of lambda, one grid.
set -euo pipefail
source "$(dirname "$0")/common.sh"

# The sweep's folder is named from its values and settings: a quick look and the full sweep never share one.
out=$("${CENTERLOSS[@]}" sweep --lambda 0.0001,0.001,0.01,0.1 --alpha 0.5 "${RUN_ARGS[@]}" | tee /dev/stderr)
folder=$(sweep_folder "$out")
echo "Figure 3: $folder/grid_test.png and grid_train.png (table: summary.md, compactness.png)"
