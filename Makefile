# The two set-up commands are `make demo` and `make test`; both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= $(wildcard ../shared/data/sst2)
# The anchor baselines' own environments (bench --baselines optimum / optimum-intel), beside .venv:
# their libraries pin transformers and optimum versions that cannot share bertpress's environment,
# nor each other's (bench/anchors/__init__.py). Exact pins in bench/anchors/*.txt.
ANCHORS := bench/anchors
VENV_OPTIMUM := .venv-optimum
VENV_INTEL := .venv-intel
OPTIMUM_STAMP := $(VENV_OPTIMUM)/.installed
INTEL_STAMP := $(VENV_INTEL)/.installed
CHECK_VENV ?= $(VENV)
# The lowest transformers bertpress declares (tests/lowest-versions.txt), tested by `make test` too.
VENV_LOW := .venv-low
LOW_STAMP := $(VENV_LOW)/.installed
LOW_TESTS := -m "not slow" --ignore=tests/test_js.py --ignore=tests/test_anchors.py

.PHONY: test test-low demo venv venv-low anchors check-no-cuda clean gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first: 2.13.0 is the CPU wheel on disk; resolving a bare `torch` would pull CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	# the ray extra too: the Ray executor's tests run for real (a local 2-CPU runtime)
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	$(MAKE) --no-print-directory check-no-cuda
	touch $(STAMP)

venv: $(STAMP)

$(LOW_STAMP): pyproject.toml tests/lowest-versions.txt
	test -x $(VENV_LOW)/bin/python || $(PY) -m venv $(VENV_LOW)
	$(VENV_LOW)/bin/pip install --quiet torch==2.13.0
	$(VENV_LOW)/bin/pip install --quiet -c tests/lowest-versions.txt -e ".[dev]"
	$(MAKE) --no-print-directory check-no-cuda CHECK_VENV=$(VENV_LOW)
	touch $(LOW_STAMP)

venv-low: $(LOW_STAMP)

$(OPTIMUM_STAMP): $(ANCHORS)/optimum.requirements.txt
	test -x $(VENV_OPTIMUM)/bin/python || $(PY) -m venv $(VENV_OPTIMUM)
	$(VENV_OPTIMUM)/bin/pip install --quiet torch==2.13.0
	$(VENV_OPTIMUM)/bin/pip install --quiet -r $(ANCHORS)/optimum.requirements.txt
	$(MAKE) --no-print-directory check-no-cuda CHECK_VENV=$(VENV_OPTIMUM)
	touch $(OPTIMUM_STAMP)

# optimum-intel goes in with --no-deps: it requires torchvision, which would pull a CUDA torch.
$(INTEL_STAMP): $(ANCHORS)/intel.requirements.txt $(ANCHORS)/intel.no-deps.txt
	test -x $(VENV_INTEL)/bin/python || $(PY) -m venv $(VENV_INTEL)
	$(VENV_INTEL)/bin/pip install --quiet torch==2.13.0
	$(VENV_INTEL)/bin/pip install --quiet -r $(ANCHORS)/intel.requirements.txt
	$(VENV_INTEL)/bin/pip install --quiet --no-deps -r $(ANCHORS)/intel.no-deps.txt
	$(MAKE) --no-print-directory check-no-cuda CHECK_VENV=$(VENV_INTEL)
	touch $(INTEL_STAMP)

anchors: $(OPTIMUM_STAMP) $(INTEL_STAMP)

# Any venv: no nvidia-* wheel and no torchvision (whose CUDA torch would replace the CPU wheel).
check-no-cuda:
	@if $(CHECK_VENV)/bin/pip list 2>/dev/null | grep -i -E '^(nvidia-|torchvision )'; then \
		echo "error: nvidia-* or torchvision found in $(CHECK_VENV); remove $(CHECK_VENV) and re-run (torch==2.13.0 must be installed first)"; exit 1; fi
	@$(CHECK_VENV)/bin/python -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 'error: $(CHECK_VENV) has a CUDA build of torch ' + torch.__version__)"

# The whole suite on the newest versions, then the fast suite on the lowest transformers declared.
test: $(STAMP) $(OPTIMUM_STAMP) $(INTEL_STAMP) js
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-low

test-low: $(LOW_STAMP)
	$(VENV_LOW)/bin/python -c "import transformers; print('lowest declared: transformers', transformers.__version__)"
	$(VENV_LOW)/bin/python -m pytest -q -p no:cacheprovider $(LOW_TESTS)

demo: $(STAMP) $(OPTIMUM_STAMP) $(INTEL_STAMP)
	$(BIN)/bertpress quickstart $(if $(DATA),--data $(DATA)) --out runs/quickstart

# The GPU check (bench/gpu_check.py, docs/gpu.md): CUDA tests, a bf16 fine-tune, bench on CUDA and one
# small search, each part in a subprocess with a timeout, under 8 minutes; OUT/gpu-check.json.
# Without CUDA every part skips (exit 0). .venv holds the CPU torch (check-no-cuda), so on a GPU
# machine point GPU_PYTHON at an interpreter with a CUDA torch and bertpress installed; .venv is
# then not built.
GPU_PYTHON ?= $(BIN)/python
GPU_CHECK_OUT ?= runs/gpu-check
gpu-check: $(if $(filter $(BIN)/python,$(GPU_PYTHON)),$(STAMP))
	$(GPU_PYTHON) -m bertpress.bench.gpu_check $(if $(DATA),--data $(DATA)) --out $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) $(VENV_LOW) $(VENV_OPTIMUM) $(VENV_INTEL) runs

# ---- JavaScript runtimes for the edge-bundle tests (issue #17) -----------------------------
# `make js` gives tests/test_js.py what it runs bundles through: node + npm, the pinned npm
# packages in js/ (onnxruntime-node, onnxruntime-web, @huggingface/transformers, puppeteer-core)
# and a system Chromium for the browser test. Missing node/npm/chromium are installed with apt
# when we are root. The npm install is offline-safe: --ignore-scripts skips onnxruntime-node's
# postinstall (it downloads GPU binaries; the CPU one is in the package) and puppeteer-core
# downloads no browser. Where an install fails, the JS tests skip — except under CI (CI=true),
# where the failure stops `make test`, as the tests themselves fail there without node/chromium.
JS_STAMP := js/node_modules/.installed
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 --no-install-recommends
JS_FAIL = echo "js: $(1)"; if [ -n "$$CI" ]; then exit 1; fi; echo "js: the JavaScript tests will skip"

.PHONY: js js-system

js: js-system $(JS_STAMP)

js-system:
	@missing=""; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-headless-shell >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing$$missing (apt)"; \
			{ apt-get -q update >/dev/null && $(APT_GET) install $$missing >/dev/null; } || { $(call JS_FAIL,apt-get install$$missing failed); }; \
		else $(call JS_FAIL,$$missing missing and not root); fi; \
	fi

$(JS_STAMP): js/package.json js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		{ cd js && ONNXRUNTIME_NODE_INSTALL=skip PUPPETEER_SKIP_DOWNLOAD=1 \
			npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.installed; } \
		|| { $(call JS_FAIL,npm ci in js/ failed); }; \
	fi
