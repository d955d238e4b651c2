#!/usr/bin/env bash
# The paper's Figure 2: softmax loss only (lambda = 0), training and test features side by side, for the
# first of SEEDS.
set -euo pipefail
source "$(dirname "$0")/common.sh"

# The run is named from its settings, so a quick look (EPOCHS, EXTRA_ARGS) and the full run each have
# their own folder. --resume: a second call continues an interrupted run, or does nothing when it is complete.
out=$("${CENTERLOSS[@]}" train --lambda 0 --seed "${SEEDS%%,*}" --resume "${RUN_ARGS[@]}" | tee -a /dev/stderr)
run=$(run_folder "$out")
mkdir -p "$OUTPUT_DIR/figures"
figure="$OUTPUT_DIR/figures/figure2_$(basename "$run").png"
"${CENTERLOSS[@]}" plot "$run" --grid --split both --epoch last -o "$figure"
"${CENTERLOSS[@]}" plot "$run" --gif --epoch last
echo "Figure 2: $figure (run $run; per-epoch plots and GIFs in $run/plots/)"
