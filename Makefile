PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Tests read MNIST from the shared copy when it sits beside the checkout (as in CI);
# otherwise they generate small synthetic IDX files themselves. `make test TEST_DATA= TEST_FASHION=` forces the
# synthetic files, as on a machine without ../shared (the Fashion-MNIST test then uses synthetic files too).
ifneq ($(wildcard ../shared/mnist),)
TEST_DATA ?= $(abspath ../shared/mnist)
endif
ifneq ($(wildcard ../shared/fashion-mnist),)
TEST_FASHION ?= $(abspath ../shared/fashion-mnist)
endif

.PHONY: venv demo test paper gpu-data clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,tensorboard]'
	touch $(STAMP)

# A real short training that shows Figure 3: 15k training images, the full test set, 3 epochs, plots in outputs/demo.
demo: venv
	$(BIN)/centerloss train --config configs/quick.toml --name demo --overwrite
	@echo
	@echo "The demo's plots: outputs/demo/plots/ (test_epoch_003.png, train_epoch_003.png, curves.png)"
	@echo "Next:  $(BIN)/centerloss plot outputs/demo --gif     # the epochs as an animation, plots/test.gif"
	@echo "       $(BIN)/centerloss train --config fast         # Figure 3 on full MNIST in minutes (docs/results.md)"

# The docs' results pages, each written by scripts/reproduce_all.sh from its run folders (hours on 2 CPU cores;
# a second call trains only what is missing). The fast solver's lambda family and alpha sweep with 3 seeds,
# without label smoothing so that lambda = 0 shows softmax alone (docs/results.md says why), then the
# paper's own solver, one seed: Figure 2, Figure 3 and the alpha sweep.
paper: venv
	CONFIG=fast SEEDS=0,1,2 EXTRA_ARGS="$(strip --label-smoothing 0 $(EXTRA_ARGS))" DOCS_DIR=docs/results/fast \
	  scripts/reproduce_all.sh
	CONFIG=paper SEEDS=0 EXTRA_ARGS="$(EXTRA_ARGS)" DOCS_DIR=docs/results/paper \
	  scripts/reproduce_all.sh

# MARK selects tests by marker: CI's second pass runs only what needs the real data or Slurm.
MARK ?=
test: venv
	$(BIN)/ruff check centerloss_cli tests bench scripts
	CENTERLOSS_DATA=$(abspath $(TEST_DATA)) CENTERLOSS_TEST_FASHION=$(abspath $(TEST_FASHION)) MPLBACKEND=Agg \
	  $(BIN)/python -m pytest -q -rs --durations=15 $(if $(MARK),-m "$(MARK)")

# The data scripts/gpu_check.sh reads, inside the tree (git ignores data/), to travel to a device machine:
# copied from ../shared/mnist, else $CENTERLOSS_DATA, else ./data (where make demo fetched it).
gpu-data:
	@src=""; for d in ../shared/mnist "$$CENTERLOSS_DATA" data/MNIST/raw data; do \
	  if [ -n "$$d" ] && ls "$$d"/train-images-idx3-ubyte* >/dev/null 2>&1; then src=$$d; break; fi; done; \
	if [ -z "$$src" ]; then echo "gpu-data: no MNIST in ../shared/mnist, \$$CENTERLOSS_DATA or ./data: run make demo, which fetches it"; exit 2; fi; \
	mkdir -p data/mnist && cp "$$src"/*-ubyte* data/mnist/ && echo "gpu-data: copied MNIST from $$src into data/mnist"

clean:
	rm -rf $(VENV)
