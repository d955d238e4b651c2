# Shared by the reproduction scripts: settings from the environment, and the centerloss command.
#   CONFIG      a built-in config (fast, paper, quick) or a config file (default: the paper's settings)
#   SEEDS       the seeds of the sweeps, e.g. 0,1,2 (default: 0); Figure 2 trains the first
#   EPOCHS      epochs per run (default: the config's; the paper's is 10,000 iterations, 21 epochs and a partial 22nd)
#   DEVICE      auto, cpu, cuda, cuda:N or mps (default: auto)
#   DATA_DIR    MNIST root (default: $CENTERLOSS_DATA, else ./data, fetched when missing)
#   OUTPUT_DIR  where the run folders and sweeps go (default: outputs)
#   EXTRA_ARGS  more flags for every run, e.g. "--train-limit 10000 --seed 1" or "--dataset fashion-mnist"
CONFIG=${CONFIG:-}
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-}
DEVICE=${DEVICE:-auto}
DATA_DIR=${DATA_DIR:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
OUTPUT_DIR=${OUTPUT_DIR:-outputs}

if [[ -x .venv/bin/centerloss ]]; then  # this checkout's own, when make venv built it
  CENTERLOSS=(.venv/bin/centerloss)
  PYTHON=(.venv/bin/python)
elif command -v centerloss >/dev/null 2>&1; then
  CENTERLOSS=(centerloss)
  PYTHON=(python3)
else
  echo "centerloss is not installed: run 'make venv' and 'source .venv/bin/activate' first" >&2
  exit 1
fi

RUN_ARGS=(--device "$DEVICE" --output-dir "$OUTPUT_DIR")
[[ -n $CONFIG ]] && RUN_ARGS+=(--config "$CONFIG")
[[ -n $EPOCHS ]] && RUN_ARGS+=(--epochs "$EPOCHS")
[[ -n $DATA_DIR ]] && RUN_ARGS+=(--data-dir "$DATA_DIR")
# EXTRA_ARGS is split on spaces on purpose: it holds several flags. The flags that decide what a script
# trains and where its results go are the scripts' own: given here they would win over them (the last flag
# wins), and a page would caption a run with settings it was not trained with.
read -r -a EXTRA <<<"$EXTRA_ARGS"
for arg in "${EXTRA[@]}"; do
  case ${arg%%=*} in
    --lambda|--alpha|--seed|--name|--sweep-name|--output-dir|--config|--resume|--overwrite)
      echo "EXTRA_ARGS: ${arg%%=*} is the scripts' own (LAMBDAS, ALPHAS, SEEDS, OUTPUT_DIR and CONFIG" \
           "set it); give it there instead" >&2
      exit 2;;
  esac
done
RUN_ARGS+=("${EXTRA[@]}")

# The run folder that `centerloss train` printed last ("  files: DIR/ (...)"), and the sweep folder that
# `centerloss sweep` printed ("... tables in DIR/", "figures and tables" unless --no-plots).
run_folder() { sed -n 's|^  files: \(.*\)/ (.*|\1|p' <<<"$1" | tail -1; }
sweep_folder() { sed -n 's|.*tables in \(.*\)/$|\1|p' <<<"$1" | tail -1; }
# What a sweep folder holds: its tables, and its figures unless its runs were --no-plots.
sweep_files() {
  if [[ -f $1/grid_test.png ]]; then echo "grid_test.png, grid_train.png, compactness.png, summary.md"
  else echo "summary.md; no figures, as its runs are --no-plots"; fi
}
# The name the results of a config go under: "fast" for CONFIG=fast or configs/fast.toml, "paper" without one.
config_label() { local name; name=$(basename "${CONFIG:-paper}"); echo "${name%.toml}"; }
# The paper's Figure 3 family (softmax alone and its four values), with the config's own lambda added where it
# is another one, read from the config itself so that it is declared in one place.
family_and_own_lambda() {
  "${PYTHON[@]}" - "${CONFIG:-paper}" <<'PY'
import sys
from centerloss_cli.settings.config import resolve_config
family = [0, 0.0001, 0.001, 0.01, 0.1]
own = resolve_config(sys.argv[1]).lam
print(",".join(f"{v:g}" for v in sorted(set(family) | {own})))
PY
}
