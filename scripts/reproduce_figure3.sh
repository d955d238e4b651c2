#!/usr/bin/env bash
# The paper's Figure 3: softmax + lambda * center loss, alpha = 0.5, four values of lambda, one grid.
set -euo pipefail
source "$(dirname "$0")/common.sh"

"${CENTERLOSS[@]}" sweep --lambda 0.0001,0.001,0.01,0.1 --alpha 0.5 --sweep-name figure3 "${RUN_ARGS[@]}"
echo "Figure 3: $OUTPUT_DIR/sweeps/figure3/grid_test.png and grid_train.png (table: summary.md, compactness.png)"
