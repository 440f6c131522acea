# Every target sets itself up: a fresh clone needs only python3 (3.11+) and redis-server.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo serve simulate loadtest bench bench-sessions interop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check gateway tests loadtest examples interop
	$(BIN)/mypy gateway

test: $(STAMP)
	@command -v redis-server >/dev/null || { echo "redis-server is missing: install it with 'apt-get install redis-server'"; exit 1; }
	$(BIN)/ruff check gateway tests
	$(BIN)/mypy gateway
	$(BIN)/pytest

serve: $(STAMP)
	$(BIN)/affinity-gateway serve --config config.yaml

simulate: $(STAMP)
	$(BIN)/affinity-gateway simulate --port 8000

demo: $(STAMP)
	$(BIN)/affinity-gateway demo

loadtest: $(STAMP)
	$(BIN)/python loadtest/run_loadtest.py

bench: $(STAMP)
	$(BIN)/python loadtest/bench.py

# The real Claude Code and Codex CLIs from npm, cached in .interop/ (git-ignored; hundreds of MB,
# so not part of `make test` or CI). INTEROP_PACKAGES pins versions, e.g.
# `make interop INTEROP_PACKAGES="@anthropic-ai/claude-code@2.1.197 @openai/codex@0.171.0"`;
# `rm -rf .interop` fetches the latest again.
INTEROP := .interop
INTEROP_PACKAGES ?= @anthropic-ai/claude-code @openai/codex

$(INTEROP)/.installed:
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 18+ to run make interop"; exit 1; }
	npm install --prefix $(INTEROP) --no-audit --no-fund --loglevel=error $(INTEROP_PACKAGES)
	touch $@

interop: $(STAMP) $(INTEROP)/.installed
	@command -v redis-server >/dev/null || { echo "redis-server is missing: install it with 'apt-get install redis-server'"; exit 1; }
	$(BIN)/python -m interop --cli-dir $(INTEROP)/node_modules/.bin
bench-sessions: $(STAMP)
	$(BIN)/python loadtest/bench_sessions.py

clean:
	rm -rf $(VENV) loadtest/results .pytest_cache .mypy_cache .ruff_cache
