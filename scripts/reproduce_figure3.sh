#!/usr/bin/env bash
# The paper's Figure 3: softmax + lambda * center loss at alpha = 0.5, for lambda = 0 (softmax alone, the
# paper's Figure 2) and its four values of lambda, with SEEDS: one grid, a table and the compactness plot.
#   LAMBDAS     the values of lambda (default: 0,0.0001,0.001,0.01,0.1 and the config's own lambda, where it
#               is another: CONFIG=fast adds its 0.03)
set -euo pipefail
source "$(dirname "$0")/common.sh"
LAMBDAS=${LAMBDAS:-$(family_and_own_lambda)}

# The sweep's folder is named from its values and settings: a quick look and the full sweep never share one.
out=$("${CENTERLOSS[@]}" sweep --lambda "$LAMBDAS" --alpha 0.5 --seed "$SEEDS" "${RUN_ARGS[@]}" | tee -a /dev/stderr)
folder=$(sweep_folder "$out")
echo "Figure 3: $folder/ ($(sweep_files "$folder"))"
