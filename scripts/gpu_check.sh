#!/usr/bin/env bash
# The device check, in one command: the CUDA tests, then every GPU figure the project promises (training
# images/s captured and eager, the paper's schedule, a batched sweep, the whole reproduction with 3 seeds),
# within a wall-time budget, packed into at most 8 files in --out (default $OUT, else gpu_check_out).
#
#   make gpu-data                                   # once: ../shared/mnist -> data/mnist, which git ignores
#   scripts/gpu_check.sh [--budget 480] [--out DIR] # on the CUDA machine, with data/mnist carried along
#   scripts/gpu_check.sh --device cpu --smoke       # the same steps on a tiny schedule, on the CPU
#
# It runs the project from this tree (nothing is installed) and fails in its first seconds, with one
# line, when anything it needs is missing. See bench/gpu_check.py for the steps and their targets.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
