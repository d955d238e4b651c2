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

.PHONY: venv demo test quick paper gpu-data clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,tensorboard]'
	touch $(STAMP)

# A real short training that shows Figure 3: 15k training images, the full test set, 3 epochs, plots in outputs/demo,
# and its report (outputs/demo/report.html).
demo: venv
	$(BIN)/centerloss train --config configs/quick.toml --name demo --overwrite
	$(BIN)/centerloss report outputs/demo --overwrite
	@echo
	@echo "The demo's plots: outputs/demo/plots/ (test_epoch_003.png, train_epoch_003.png, curves.png)"
	@echo "Its report, the epochs under a slider: outputs/demo/report.html (open it in a browser)"
	@echo "Next:  $(BIN)/centerloss plot outputs/demo --gif     # the epochs as an animation, plots/test.gif"
	@echo "       $(BIN)/centerloss train --config fast         # Figure 3 on full MNIST in minutes (docs/results.md)"

# The docs' results pages, each written by scripts/reproduce_all.sh from its run folders; a second call trains
# only what is missing, and a stopped one goes on where it stopped. Each page's table says how long its runs took,
# and each step says their sum before it starts. First the fast recipe (configs/fast.toml): Figure 2, the lambda
# family with the recipe's own lambda, and the alpha sweep, 3 seeds each; then the paper's own solver, one seed: Figure 2, Figure 3 and the alpha sweep; then
# make demo's settings over 3 seeds, as this CPU trains them and as an AVX2 CPU does (fp32 said outright: auto
# would go on with step 3's runs where they are bf16, as a resume keeps its precision). Each step is the scripts'
# defaults for its CONFIG, so a bare scripts/reproduce_all.sh writes the same fast page as step 1.
paper: venv
	@echo "make paper: 4 steps, each a results page; last time, in all: $$(scripts/training_time.sh $(PAGES))"
	@$(call step,1,fast,the fast recipe$(comma) 3 seeds)
	CONFIG=fast SEEDS=0,1,2 EXTRA_ARGS="$(EXTRA_ARGS)" scripts/reproduce_all.sh
	@$(call step,2,paper,the paper's own solver$(comma) one seed)
	CONFIG=paper SEEDS=0 EXTRA_ARGS="$(EXTRA_ARGS)" scripts/reproduce_all.sh
	@$(call step,3,quick,make demo's settings$(comma) 3 seeds)
	CONFIG=quick SEEDS=0,1,2 PARTS=seeds EXTRA_ARGS="$(EXTRA_ARGS)" scripts/reproduce_all.sh
	@$(call step,4,quick-avx2,make demo's settings on an AVX2 CPU (played: fp32)$(comma) 3 seeds)
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 CONFIG=quick SEEDS=0,1,2 PARTS=seeds DOCS_DIR=docs/results/quick-avx2 \
	  EXTRA_ARGS="$(strip --precision fp32 $(EXTRA_ARGS))" scripts/reproduce_all.sh

PAGES := $(foreach p,fast paper quick quick-avx2,docs/results/$(p)/README.md)
# A step of make paper: what it writes, and how long its runs took when its page was last written.
comma := ,
step = echo "make paper, step $(1) of 4: docs/results/$(2)/ ($(3)); last time: $$(scripts/training_time.sh \
  docs/results/$(2)/README.md)"

# MARK selects tests by marker: CI's second pass runs only what needs the real data or Slurm.
MARK ?=
test: venv
	$(BIN)/ruff check centerloss_cli tests bench scripts
	CENTERLOSS_DATA=$(abspath $(TEST_DATA)) CENTERLOSS_TEST_FASHION=$(abspath $(TEST_FASHION)) MPLBACKEND=Agg \
	  $(BIN)/python -m pytest -q -rs --durations=15 $(if $(MARK),-m "$(MARK)")

# The quick lane of an edit-test loop: every test that starts no whole process of its own (docs/developers.md).
quick: venv
	$(MAKE) --no-print-directory test MARK="not process"

# The data scripts/gpu_check.sh reads, inside the tree (git ignores data/), to travel to a device machine:
# copied from ../shared/mnist, else $CENTERLOSS_DATA, else ./data (where make demo fetched it).
gpu-data:
	@src=""; for d in ../shared/mnist "$$CENTERLOSS_DATA" data/MNIST/raw data; do \
	  if [ -n "$$d" ] && ls "$$d"/train-images-idx3-ubyte* >/dev/null 2>&1; then src=$$d; break; fi; done; \
	if [ -z "$$src" ]; then echo "gpu-data: no MNIST in ../shared/mnist, \$$CENTERLOSS_DATA or ./data: run make demo, which fetches it"; exit 2; fi; \
	mkdir -p data/mnist && cp "$$src"/*-ubyte* data/mnist/ && echo "gpu-data: copied MNIST from $$src into data/mnist"

clean:
	rm -rf $(VENV)
