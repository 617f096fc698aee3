# ae-jax: `make demo` trains the conv autoencoder on Fashion-MNIST; `make test` runs the test suite.
# Both set up what they need: a virtual environment with the package, and Debian's Fashion-MNIST files.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_WORKDIR ?= runs/demo_conv_ae
DEMO_STEPS ?= 2000

.PHONY: demo test test-fast notebook venv data clean

# The reference implementations the tests compare against, beside the package: PyTorch (CPU) and the
# PyTorch `lpips` package, whose official .pth heads the LPIPS tests read with torch.load (installed without
# its dependencies: its torchvision does not load with the CPU torch, and the tests never import it), and
# fidax with its two small dependencies for the Inception tests. Editing this Makefile reinstalls.
$(VENV)/.installed: pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps lpips==0.1.4 fidax==0.3.1 jaxtyping wadler_lindig
	touch $@

venv: $(VENV)/.installed

# Debian's dataset-fashion-mnist package, when the files are missing and apt is usable (root, or sudo).
data:
	@if [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ] || [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte" ]; then \
	  echo "Fashion-MNIST idx files: $(FASHION_MNIST_DIR)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null || echo "warning: apt-get install dataset-fashion-mnist failed"; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist) >/dev/null || echo "warning: apt-get install dataset-fashion-mnist failed"; \
	else \
	  echo "note: Fashion-MNIST idx files not in $(FASHION_MNIST_DIR) and apt is not usable here:"; \
	  echo "      'apt-get install dataset-fashion-mnist', or pass --config.data.idx_dir=<folder with the 4 idx files>,"; \
	  echo "      or install ae-jax[tfds-download] and pass --config.data.download=True"; \
	fi

demo: venv data
	$(PY) -m experiments.main --config experiments/configs/conv_ae_fashion_mnist.py \
	  --workdir $(DEMO_WORKDIR) --config.total_steps=$(DEMO_STEPS)

# Two workers, one test file each at a time, handed out in the order tests/conftest.py sorts them (the files
# with long tests first). A worker that crashes ends the run (xdist otherwise waits for it
# forever); a test that runs past its timeout fails with its name and stack (pytest-timeout), and the run
# ends with the summary and the slowest tests.
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --max-worker-restart=0 --timeout=600 \
  --durations=10
test: venv data
	$(PYTEST) tests

# The unit tests alone: no process tests (`slow`), no training run through the trainer (`training`) and no
# training on real data (`integration`).
test-fast: venv
	$(PYTEST) -m "not slow and not training and not integration" --timeout=120 tests

# The tutorial, run as a user runs it: its kernel starts in docs/ and imports the installed package. The
# executed notebook, outputs and pictures included, is written to runs/tutorial.ipynb and what its cells
# print is shown here; the notebook removes its temporary run folder in its last cell.
notebook: venv data
	$(PY) -m pip install --quiet -e '.[notebook]'
	mkdir -p runs
	$(VENV)/bin/jupyter execute docs/tutorial.ipynb --output=../runs/tutorial
	@$(PY) -c 'import nbformat; nb = nbformat.read("runs/tutorial.ipynb", 4); \
	  print("".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")); \
	  print("executed notebook, with its outputs and pictures: runs/tutorial.ipynb (open it in Jupyter)")'

clean:
	rm -rf $(VENV) runs
