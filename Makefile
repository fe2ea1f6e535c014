# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv/ on first use and
# reuse it while constraints.txt and pyproject.toml are unchanged (the stamp file names their hash).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | sha256sum | cut -c1-12)
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/lookalike demo --dir demo --prefect  # the full flow on Prefect's embedded server

test: install
	$(BIN)/python -m pytest -q -m "not scale"

clean:
	rm -rf demo .pytest_cache
