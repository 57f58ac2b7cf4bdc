# bbjtune — the two commands a fresh machine needs:
#   make demo   create .venv, install, run the whole pipeline on the embedded default (tiny model + examples/)
#   make test   create/update .venv, install with test extras, lint (ruff check, ruff format --check), run the tests
# and the quick loop while changing code:
#   make test-fast   lint and the tests that train no model (tests marked slow are left out)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch first and pinned: on a CPU machine with a local CPU wheel this avoids a multi-GB CUDA download.
TORCH  ?= torch==2.13.0
EXTRAS ?= eval,export,review,qlora-cpu,tensorboard
# llama-cpp-python compiles llama.cpp from source once: ~9 CPU-minutes, 5-8 min on 2 cores (benchmarks/
# RESULTS.md, "Export"); pip caches the wheel (~/.cache/pip/wheels: cache that directory in CI).
# GGML_NATIVE=OFF: a portable AVX2 build whose cached wheel works on any x86-64 machine of the last decade.
# LLAVA_BUILD=OFF: skip the multimodal library bbjtune never loads. llama.cpp's examples, tests and C++
# server are already off when llama-cpp-python builds it.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
export PIP_DISABLE_PIP_VERSION_CHECK = 1
export HF_HUB_DISABLE_TELEMETRY = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: demo test test-fast lint install install-wheels install-test clean-demo browser-test-deps sandbox-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

comma := ,
empty :=
space := $(empty) $(empty)
# the extras without `export`: prebuilt wheels only, installed first
WHEEL_EXTRAS = $(subst $(space),$(comma),$(filter-out export,$(subst $(comma),$(space),$(EXTRAS))))
# the `export` extra's llama.cpp binding, as pyproject.toml names it (tests/test_makefile.py keeps them equal)
LLAMA_CPP_REQ = llama-cpp-python[server]>=0.3.8
HEARTBEAT ?= 30
# Wait for the background job $$pid, saying every $(HEARTBEAT) s that it still runs; its exit status.
WAIT_FOR = n=0; while kill -0 $$pid 2>/dev/null; do sleep 1; n=$$((n + 1)); \
	  if [ $$((n % $(HEARTBEAT))) = 0 ] && kill -0 $$pid 2>/dev/null; then echo "  ... $(1) ($$n s)"; fi; \
	done; wait $$pid
LLAMA_CPP_NOTE = echo "llama-cpp-python (GGUF quantization, verification, serve gguf): unless pip has its wheel"; \
	echo "  cached, installing it compiles llama.cpp from source, about 9 CPU-minutes (5-8 min on 2 cores)"

$(VENV)/.installed-wheels: pyproject.toml | $(PY)
	@echo "installing bbjtune and its libraries into $(VENV) (prebuilt wheels)"
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[$(WHEEL_EXTRAS)]"
	touch $@

# llama-cpp-python goes last and on its own: pip compiles llama.cpp for minutes without a word, so
# make says so first and reports while it runs.
$(VENV)/.installed: $(VENV)/.installed-wheels
	@case ",$(EXTRAS)," in *,export,*) ;; *) exit 0;; esac; \
	if ! $(PY) -c "import llama_cpp" 2>/dev/null; then $(LLAMA_CPP_NOTE); fi; \
	$(PIP) install -q -e ".[$(EXTRAS)]" & pid=$$!; $(call WAIT_FOR,still installing llama-cpp-python)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[$(EXTRAS),test]"
	touch $@

install-wheels: $(VENV)/.installed-wheels

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# A fresh demo builds llama-cpp-python in the background while it prepares data, trains and
# evaluates (the tiny model trains on one thread, so the build has the other core), and waits for it
# only before the export, which needs it. The build's output goes to $(VENV)/llama-cpp-build.log.
# The demo's tiny random model writes HumanEval answers too. Where bubblewrap cannot run (no root to
# install it), the demo opts in to the limits-only sandbox for that throw-away model, and says so.
demo: $(VENV)/.installed-wheels sandbox-deps
	@if ! $(PY) -c "from bbjtune.evaluate.sandbox import detect_isolation; detect_isolation('bwrap')" >/dev/null 2>&1; then \
	  echo "note: bubblewrap cannot run here: the demo runs its tiny model's HumanEval answers with limits only (BBJTUNE_SANDBOX=rlimits)"; \
	  export BBJTUNE_SANDBOX=rlimits; fi; \
	if $(PY) -c "import llama_cpp" 2>/dev/null; then exec $(VENV)/bin/bbjtune run quickstart; fi; \
	$(LLAMA_CPP_NOTE); echo "  building it in the background while the demo trains (log: $(VENV)/llama-cpp-build.log)"; \
	$(PIP) install -q "$(LLAMA_CPP_REQ)" > $(VENV)/llama-cpp-build.log 2>&1 & pid=$$!; \
	$(VENV)/bin/bbjtune run quickstart --stages data,train,eval || { kill $$pid 2>/dev/null; exit 1; }; \
	if kill -0 $$pid 2>/dev/null; then echo "waiting for the llama.cpp build before the GGUF export"; fi; \
	if ! { $(call WAIT_FOR,still compiling llama.cpp); }; then \
	  tail -n 20 $(VENV)/llama-cpp-build.log; echo "llama-cpp-python did not build: see $(VENV)/llama-cpp-build.log"; exit 1; fi; \
	touch $(VENV)/.installed; \
	$(VENV)/bin/bbjtune run quickstart --stages export

test: install-test browser-test-deps sandbox-deps lint
	$(PY) -m pytest -q

test-fast: install-test lint
	$(PY) -m pytest -q -m "not slow and not real and not gpu"

lint: install-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

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
