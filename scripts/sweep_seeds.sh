#!/usr/bin/env bash
# The settings themselves over SEEDS: the config's own lambda and alpha (make demo's with CONFIG=quick), one run
# per seed, so that a page can show the spread to expect on another machine.
set -euo pipefail
source "$(dirname "$0")/common.sh"

out=$("${CENTERLOSS[@]}" sweep --seed "$SEEDS" "${RUN_ARGS[@]}" | tee -a /dev/stderr)
folder=$(sweep_folder "$out")
echo "Seeds: $folder/ ($(sweep_files "$folder"))"
