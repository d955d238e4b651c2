#!/usr/bin/env bash
# The paper's Figure 2: softmax loss only (lambda = 0), training and test features side by side.
set -euo pipefail
source "$(dirname "$0")/common.sh"

run="$OUTPUT_DIR/figure2_softmax"
# --resume: a second call continues an interrupted run, or does nothing when it is complete.
"${CENTERLOSS[@]}" train --lambda 0 --name figure2_softmax --resume "${RUN_ARGS[@]}"
mkdir -p "$OUTPUT_DIR/figures"
"${CENTERLOSS[@]}" plot "$run" --grid --split both --epoch last -o "$OUTPUT_DIR/figures/figure2.png"
"${CENTERLOSS[@]}" plot "$run" --gif --epoch last
echo "Figure 2: $OUTPUT_DIR/figures/figure2.png (per-epoch plots and GIFs in $run/plots/)"
