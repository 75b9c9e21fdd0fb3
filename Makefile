# edgepack — `make demo` and `make test` work on a fresh machine (Python 3.10+, Debian/Ubuntu for data).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= convert,camera,dev
FASHION := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
STAMP  := $(VENV)/.edgepack-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
APT_PACKAGES := dataset-fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] && echo "" || echo sudo)

.PHONY: demo test test-all setup data lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.edgepack-*
	touch $@

# Real data from Debian packages (DESIGN.md §7); needs root or sudo the first time.
data:
	@if [ ! -f $(FASHION) ]; then \
	  if [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; then \
	    echo "installing Debian data package(s): $(APT_PACKAGES)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "Fashion-MNIST is missing: ask an admin to run 'apt-get install $(APT_PACKAGES)'," \
	         "or set EDGEPACK_FASHION_MNIST to a folder holding the four IDX .gz files."; exit 1; \
	  fi; \
	fi

demo: setup data
	$(BIN)/python demos/fashion_rpi4.py --output fashion_cnn.epk
	$(BIN)/python demos/run_bundle.py fashion_cnn.epk

# pytest exits 5 when a marker selection leaves no test: say so loudly instead of failing obscurely.
test: setup data
	@$(BIN)/python -m pytest -q -m "not slow"; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc

test-all: setup data
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf .cache fashion_cnn.epk
