#!/usr/bin/env bash
# How long the runs of results pages trained, summed from the last column of their "Every run" tables:
#   scripts/training_time.sh docs/results/fast/README.md   ->   "27 runs, 2.4 h of training"
# make paper says it for all its pages first, then for each page before its step. No page written yet:
# "not written yet".
pages=()
for page in "$@"; do [[ -f $page ]] && pages+=("$page"); done
(( ${#pages[@]} )) || { echo "not written yet"; exit 0; }
awk -F'|' '/^\| `/ { n++; split($(NF - 1), t, " "); total += t[1] }
  END { if (n) printf "%d runs, %.1f h of training (the page names the machine)\n", n, total / 60;
        else print "no runs on the page" }' "${pages[@]}"
