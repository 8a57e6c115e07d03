# heal-sglang: `make install` then `make test` on any machine; GPU targets need CUDA.
PYTHON ?= python3
PYTEST = $(PYTHON) -m pytest

.PHONY: install test test-gpu bench lint

install:
	$(PYTHON) -m pip install -e ".[test,bench]"

# CPU: every kernel under the Triton interpreter; GPU-only tests are skipped.
test:
	TRITON_INTERPRET=1 $(PYTEST) -q tests

# GPU: the same tests with real tensor cores, plus the `gpu`-marked ones.
test-gpu:
	$(PYTEST) -q tests

bench:
	$(PYTEST) -q bench --benchmark-json=bench-results.json --benchmark-columns=median,rounds
	$(PYTHON) -m bench.report bench-results.json

lint:
	$(PYTHON) -m ruff check heal_kernels heal_sglang bench tests
