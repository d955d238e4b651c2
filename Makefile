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

.PHONY: venv demo test gpu-data clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,tensorboard]'
	touch $(STAMP)

# A real short training that shows Figure 3: 15k training images, the full test set, 3 epochs, plots in outputs/demo.
demo: venv
	$(BIN)/centerloss train --config configs/quick.toml --name demo --overwrite

# MARK selects tests by marker: CI's second pass runs only what needs the real data or Slurm.
MARK ?=
test: venv
	CENTERLOSS_DATA=$(TEST_DATA) CENTERLOSS_TEST_FASHION=$(TEST_FASHION) MPLBACKEND=Agg \
	  $(BIN)/python -m pytest -q -rs --durations=15 $(if $(MARK),-m "$(MARK)")

# The data scripts/gpu_check.sh reads, inside the tree (git ignores data/), to travel to a device machine.
gpu-data:
	mkdir -p data/mnist && cp ../shared/mnist/*-ubyte.gz data/mnist/

clean:
	rm -rf $(VENV)
