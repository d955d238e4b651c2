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
# First the switches that cap torch's CPU kernels: they change what --precision auto takes (an AVX2 machine,
# played), and the page says them in make paper's order.
command=""
for cap in ONEDNN_MAX_CPU_ISA ATEN_CPU_CAPABILITY; do [[ -n ${!cap:-} ]] && command+="$cap=${!cap} "; done
command+="CONFIG=$CONFIG SEEDS=$SEEDS"
[[ $PARTS != "figure2 figure3 alpha" ]] && command+=" PARTS=\"$PARTS\""
[[ -n $EPOCHS ]] && command+=" EPOCHS=$EPOCHS"
[[ $DEVICE != auto ]] && command+=" DEVICE=$DEVICE"
[[ -n $EXTRA_ARGS ]] && command+=" EXTRA_ARGS=\"$EXTRA_ARGS\""
# Each part: its script, the start of the last line it prints (which names its folder), and the page's flag.
declare -A SCRIPT=([figure2]=reproduce_figure2.sh [figure3]=reproduce_figure3.sh [alpha]=sweep_alpha.sh
                   [seeds]=sweep_seeds.sh)
declare -A SAYS=([figure2]="Figure 2" [figure3]="Figure 3" [alpha]="Alpha sweep" [seeds]="Seeds")
declare -A FLAG=([figure2]=--figure2 [figure3]=--lambda-sweep [alpha]=--alpha-sweep [seeds]=--seeds-sweep)
args=(--out "$DOCS_DIR" --label "$(config_label)" --command "$command scripts/reproduce_all.sh")
read -r -a parts <<<"$PARTS"
for i in "${!parts[@]}"; do
  name=${parts[$i]}
  echo "== part $((i + 1)) of ${#parts[@]}: $name (${SCRIPT[$name]})" >&2
  # Each part shows its whole output on stderr itself; its last line, the summary, is shown here too. A part
  # that fails stops everything here, before the page is touched.
  if ! out=$("$here/${SCRIPT[$name]}"); then
    echo "reproduce_all.sh: part $name (${SCRIPT[$name]}) failed, as the lines above say; the page was not written" >&2
    exit 1
  fi
  tail -n 1 <<<"$out" >&2
  if [[ $name == figure2 ]]; then folder=$(sed -n 's|^Figure 2: .* (run \(.*\); per-epoch.*|\1|p' <<<"$out")
  else folder=$(sed -n "s|^${SAYS[$name]}: \\(.*\\)/ (.*|\\1|p" <<<"$out"); fi
  if [[ -z $folder ]]; then
    echo "reproduce_all.sh: part $name printed no '${SAYS[$name]}: ...' line naming its folder; the page was not written" >&2
    exit 1
  fi
  args+=("${FLAG[$name]}" "$folder")
done
"${PYTHON[@]}" "$here/paper_figures.py" "${args[@]}"
# The page's runs as one interactive report, in the output folder (not in git: it holds their features).
sweeps=()
for i in "${!args[@]}"; do [[ ${args[$i]} == --*-sweep ]] && sweeps+=("${args[$((i + 1))]}"); done
if ((${#sweeps[@]})); then
  "${CENTERLOSS[@]}" report "${sweeps[@]}" -o "$OUTPUT_DIR/report_$(basename "$DOCS_DIR").html" --overwrite
fi
