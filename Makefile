# bbjtune — the two commands a fresh machine needs:
#   make demo   create .venv, install, run the whole pipeline on the embedded default (tiny model + examples/)
#   make test   create/update .venv, install with test extras, lint (ruff check), run the tests
# and the quick loop while changing code:
#   make test-fast   lint and the tests that train no model (tests marked slow are left out)
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

.PHONY: demo test test-fast lint install install-test clean-demo browser-test-deps sandbox-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[$(EXTRAS),test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The demo's tiny random model writes HumanEval answers too. Where bubblewrap cannot run (no root to
# install it), the demo opts in to the limits-only sandbox for that throw-away model, and says so.
demo: install sandbox-deps
	@if $(PY) -c "from bbjtune.evaluate.sandbox import detect_isolation; detect_isolation('bwrap')" >/dev/null 2>&1; then \
	  $(VENV)/bin/bbjtune run quickstart; else \
	  echo "note: bubblewrap cannot run here: the demo runs its tiny model's HumanEval answers with limits only (BBJTUNE_SANDBOX=rlimits)"; \
	  BBJTUNE_SANDBOX=rlimits $(VENV)/bin/bbjtune run quickstart; fi

test: install-test browser-test-deps sandbox-deps lint
	$(PY) -m pytest -q

test-fast: install-test lint
	$(PY) -m pytest -q -m "not slow and not real and not gpu"

lint: install-test
	$(PY) -m ruff check .

# The review page's browser test drives Debian's chromium (never Playwright's own download). It is
# installed here when missing and possible (apt-get as root or with password-less sudo); otherwise
# the test is skipped and pytest prints why.
CHROMIUM ?= /usr/bin/chromium
browser-test-deps:
	@if [ -x "$(CHROMIUM)" ] || command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: chromium is missing and there is no apt-get: the browser test will be skipped"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "note: chromium is missing and installing it needs root: the browser test will be skipped"; exit 0; fi; \
	echo "installing Debian's chromium for the browser test (apt-get install -y chromium)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium >/dev/null 2>&1; } \
	  || echo "note: could not install chromium: the browser test will be skipped"

# HumanEval runs code the model wrote inside bubblewrap (bwrap); without it `bbjtune eval` refuses to run
# HumanEval unless eval.humaneval.sandbox names a weaker mode (the tests then opt in to one and skip the
# bubblewrap-specific ones). Installed here like chromium: when missing and possible (apt-get as root or
# with password-less sudo).
sandbox-deps:
	@if command -v bwrap >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: bubblewrap is missing and there is no apt-get: the bubblewrap tests will be skipped (install bwrap)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "note: bubblewrap is missing and installing it needs root (sudo apt-get install bubblewrap): the bubblewrap tests will be skipped (the others opt in to a weaker sandbox)"; exit 0; fi; \
	echo "installing bubblewrap, the sandbox HumanEval runs model-written code in (apt-get install -y bubblewrap)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1; } \
	  || echo "note: could not install bubblewrap: the bubblewrap tests will be skipped (the others opt in to a weaker sandbox)"

clean-demo:
	rm -rf runs/quickstart
