# gen_jax: `make demo` runs the main job (one flagship row per family, <= 15 min), `make bakeoff`
# the full bake-off (every row), `make test` the whole test suite.
# Both create .venv (Python 3.11, PyPI only) on first use and install the pinned set.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export JAX_PLATFORMS ?= cpu
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.venv/jax_cache
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: install demo bakeoff test test-fast bench clean

$(VENV)/.installed: requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m experiments.bakeoff --suite demo --out results/demo

bakeoff: install
	$(PY) -m experiments.bakeoff --suite full --out results/bakeoff

test: install
	$(PY) -m pytest tests -n 2 --dist loadfile  # two workers, each test file on one (its module fixtures shared)

test-fast: install
	$(PY) -m pytest tests -m "not slow"

clean:
	rm -rf results .pytest_cache
