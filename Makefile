# The two set-up commands are `make demo` and `make test`; both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= $(wildcard ../shared/data/sst2)

.PHONY: test demo venv check-no-cuda clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first: 2.13.0 is the CPU wheel on disk; resolving a bare `torch` would pull CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(MAKE) --no-print-directory check-no-cuda
	touch $(STAMP)

venv: $(STAMP)

check-no-cuda:
	@if $(BIN)/pip list 2>/dev/null | grep -i '^nvidia-'; then \
		echo "error: nvidia-* packages found in $(VENV); remove $(VENV) and re-run (torch==2.13.0 must be installed first)"; exit 1; fi

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/bertpress quickstart $(if $(DATA),--data $(DATA)) --out runs/quickstart

clean:
	rm -rf $(VENV) runs
