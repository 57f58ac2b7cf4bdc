# bbjtune — the two commands a fresh machine needs:
#   make demo   create .venv, install, run the whole pipeline on the embedded default (tiny model + examples/)
#   make test   create/update .venv, install with test extras, run the tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch first and pinned: on a CPU machine with a local CPU wheel this avoids a multi-GB CUDA download.
TORCH  ?= torch==2.13.0
EXTRAS ?= eval,export,review,qlora-cpu,tensorboard
# llama-cpp-python compiles llama.cpp from source once: ~9 CPU-minutes, 5-7 min on 2 cores (benchmarks/
# RESULTS.md, "Export"); pip caches the wheel (~/.cache/pip/wheels: cache that directory in CI).
# GGML_NATIVE=OFF: a portable AVX2 build whose cached wheel works on any x86-64 machine of the last decade.
# LLAVA_BUILD=OFF: skip the multimodal library bbjtune never loads. llama.cpp's examples, tests and C++
# server are already off when llama-cpp-python builds it.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
export PIP_DISABLE_PIP_VERSION_CHECK = 1
export HF_HUB_DISABLE_TELEMETRY = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: demo test install install-test clean-demo browser-test-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

comma := ,
empty :=
space := $(empty) $(empty)
# the extras without `export`: prebuilt wheels only, installed first
WHEEL_EXTRAS = $(subst $(space),$(comma),$(filter-out export,$(subst $(comma),$(space),$(EXTRAS))))
HEARTBEAT ?= 30

# llama-cpp-python goes last and on its own: unless pip has its wheel cached, pip compiles llama.cpp
# for minutes without a word, so make says so first and reports every $(HEARTBEAT) s while it runs.
$(VENV)/.installed: pyproject.toml | $(PY)
	@echo "installing bbjtune and its libraries into $(VENV) (prebuilt wheels)"
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[$(WHEEL_EXTRAS)]"
	@case ",$(EXTRAS)," in *,export,*) ;; *) exit 0;; esac; \
	if ! $(PY) -c "import llama_cpp" 2>/dev/null; then \
	  echo "installing llama-cpp-python (GGUF quantization, verification, serve gguf): unless pip has its"; \
	  echo "  wheel cached, this compiles llama.cpp from source, about 9 CPU-minutes (5-7 min on 2 cores)"; fi; \
	start=$$(date +%s); $(PIP) install -q -e ".[$(EXTRAS)]" & pid=$$!; \
	while kill -0 $$pid 2>/dev/null; do sleep $(HEARTBEAT); \
	  if kill -0 $$pid 2>/dev/null; then echo "  ... still installing llama-cpp-python ($$(($$(date +%s) - start)) s)"; fi; \
	done; wait $$pid
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[$(EXTRAS),test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/bbjtune run quickstart

test: install-test browser-test-deps
	$(PY) -m pytest -q

# The review page's browser test drives Debian's chromium (never Playwright's own download). When it
# is missing, `make test` says so and why, then installs it when it can (apt-get as root or with
# password-less sudo); otherwise the test is skipped and pytest prints why. BROWSER_TEST=no: never
# install it (the test then runs only where chromium is already installed).
CHROMIUM ?= /usr/bin/chromium
BROWSER_TEST ?= auto
browser-test-deps:
	@if [ "$(BROWSER_TEST)" = no ]; then \
	  echo "note: BROWSER_TEST=no: chromium is not installed by make (the browser test skips without it)"; exit 0; fi; \
	if [ -x "$(CHROMIUM)" ] || command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	echo "browser test: the review page's browser test drives Debian's chromium, which is not installed."; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: there is no apt-get to install it with: the browser test will be skipped"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "note: installing it needs root: the browser test will be skipped (as root: apt-get install chromium)"; exit 0; fi; \
	echo "browser test: installing it now with '$${SUDO:+sudo }apt-get install -y chromium' (chromium and" \
	     "its libraries: about 130 Debian packages, 80+ MB to download, a few hundred MB on disk, a minute or" \
	     "more; 'make test BROWSER_TEST=no' skips this)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y -qq chromium >/dev/null \
	  || { echo "browser test: the package lists may be stale; running 'apt-get update' and trying again"; \
	       $$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: could not install chromium (apt-get's error is above): the browser test will be skipped"

clean-demo:
	rm -rf runs/quickstart
