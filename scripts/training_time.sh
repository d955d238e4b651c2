#!/usr/bin/env bash
# How long the runs of a results page trained, summed from the last column of its "Every run" table:
#   scripts/training_time.sh docs/results/fast/README.md   ->   "27 runs, 2.4 h of training"
# make paper says it before each step. A page not written yet: "not written yet".
[[ -f $1 ]] || { echo "not written yet"; exit 0; }
awk -F'|' '/^\| `/ { n++; split($(NF - 1), t, " "); total += t[1] }
  END { if (n) printf "%d runs, %.1f h of training (the page names the machine)\n", n, total / 60;
        else print "no runs on the page" }' "$1"
