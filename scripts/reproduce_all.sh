#!/usr/bin/env bash
# Every figure and table of a results page of the docs, in one command: Figure 2, Figure 3's lambda family
# and the alpha sweep with SEEDS (default here: 0,1,2), then the page (DOCS_DIR/README.md), its figures
# and its tables, written from the run folders. A second call trains nothing that is finished.
#
#   scripts/reproduce_all.sh                                # CONFIG=fast: docs/results/fast/
#   CONFIG=paper SEEDS=0 scripts/reproduce_all.sh          # the paper's solver, one seed: docs/results/paper/
#
#   PARTS       which of figure2, figure3, alpha and seeds to run (default: the first three; seeds: the config's
#               own lambda and alpha over SEEDS, as for make demo's page)
#   DOCS_DIR    where the page goes (default: docs/results/LABEL, LABEL from CONFIG: fast, paper, ...)
# and the settings of scripts/common.sh (CONFIG, EPOCHS, DEVICE, DATA_DIR, OUTPUT_DIR, EXTRA_ARGS) and of
# each part (LAMBDAS, ALPHAS).
set -euo pipefail
here=$(dirname "$0")
export CONFIG=${CONFIG:-fast} SEEDS=${SEEDS:-0,1,2}
source "$here/common.sh"
PARTS=${PARTS:-figure2 figure3 alpha}
DOCS_DIR=${DOCS_DIR:-docs/results/$(config_label)}
for part in $PARTS; do
  case $part in figure2|figure3|alpha|seeds) ;; *) echo "PARTS: '$part' is not one of figure2, figure3, alpha, seeds" >&2; exit 2;; esac
done

# The command the page says made it: the settings that change what is trained (not where the data is).
command="CONFIG=$CONFIG SEEDS=$SEEDS"
# The switches that cap torch's CPU kernels change what --precision auto takes (an AVX2 machine, played).
for cap in ONEDNN_MAX_CPU_ISA ATEN_CPU_CAPABILITY; do [[ -n ${!cap:-} ]] && command="$cap=${!cap} $command"; done
[[ $PARTS != "figure2 figure3 alpha" ]] && command+=" PARTS=\"$PARTS\""
[[ -n $EPOCHS ]] && command+=" EPOCHS=$EPOCHS"
[[ $DEVICE != auto ]] && command+=" DEVICE=$DEVICE"
[[ -n $EXTRA_ARGS ]] && command+=" EXTRA_ARGS=\"$EXTRA_ARGS\""
# Each part shows its whole output on stderr itself; its last line, the summary, is shown here too.
part() { local out; out=$("$here/$1"); tail -n 1 <<<"$out" >&2; echo "$out"; }
args=(--out "$DOCS_DIR" --label "$(config_label)" --command "$command scripts/reproduce_all.sh")
if [[ " $PARTS " == *" figure2 "* ]]; then
  out=$(part reproduce_figure2.sh)
  args+=(--figure2 "$(sed -n 's|^Figure 2: .* (run \(.*\); per-epoch.*|\1|p' <<<"$out")")
fi
if [[ " $PARTS " == *" figure3 "* ]]; then
  out=$(part reproduce_figure3.sh)
  args+=(--lambda-sweep "$(sed -n 's|^Figure 3: \(.*\)/ (.*|\1|p' <<<"$out")")
fi
if [[ " $PARTS " == *" alpha "* ]]; then
  out=$(part sweep_alpha.sh)
  args+=(--alpha-sweep "$(sed -n 's|^Alpha sweep: \(.*\)/ (.*|\1|p' <<<"$out")")
fi
if [[ " $PARTS " == *" seeds "* ]]; then
  out=$(part sweep_seeds.sh)
  args+=(--seeds-sweep "$(sed -n 's|^Seeds: \(.*\)/ (.*|\1|p' <<<"$out")")
fi
"${PYTHON[@]}" "$here/paper_figures.py" "${args[@]}"
