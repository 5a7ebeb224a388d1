# One-command entry points (see README). Everything the project needs is installed from here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-lean setup-test data demo test bench clean

# Every Python package (training and test tools included) into a virtual environment, then
# Fashion-MNIST if it is nowhere to be found.
setup: $(VENV)/.installed data

# Only what building and searching need: no PyTorch (the trained model ships inside the package).
setup-lean: $(VENV)/.installed-lean data

# Fashion-MNIST (Debian/Ubuntu: the dataset-fashion-mnist package; elsewhere torchvision downloads
# it on first use, with the train extra).
data:
	@if ! $(BIN)/python -c "from aesearch.sources.fashion_mnist import find_data_dir; raise SystemExit(find_data_dir() is None)"; then \
	  $(MAKE) --no-print-directory apt PACKAGES=dataset-fashion-mnist; fi

# The tests also drive a real headless Chromium (Debian's chromium and chromium-driver).
setup-test: setup
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  $(MAKE) --no-print-directory apt PACKAGES="chromium chromium-driver"; fi

apt:
	@if command -v apt-get >/dev/null; then \
	  echo "Installing $(PACKAGES) (Debian packages)"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(PACKAGES); \
	else \
	  echo "No apt-get here: install $(PACKAGES) yourself (see README); the tests that need them are skipped"; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-lean

$(VENV)/.installed-lean: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e .
	touch $@

# Builds the default index once, with the shipped model (no training); `aesearch build-index` rebuilds it.
demo: setup-lean
	@if [ -f indexes/fashion-mnist/manifest.json ]; then \
	  echo "indexes/fashion-mnist exists: skipping the build (run .venv/bin/aesearch build-index to rebuild)"; \
	else $(BIN)/aesearch build-index; fi
	$(BIN)/aesearch query examples/ankle-boot.jpg -k 8 --out runs/ankle-boot.aesearch.png

test: setup-test
	$(BIN)/ruff check aesearch tests scripts
	$(BIN)/ruff format --check aesearch tests scripts
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python scripts/bench_train.py

clean:
	rm -rf $(VENV) runs .pytest_cache test-artifacts
