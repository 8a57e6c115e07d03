# heal-sglang: `make install` then `make test` on any machine; GPU targets need CUDA.
PYTHON ?= python3
PYTEST = $(PYTHON) -m pytest

.PHONY: install test test-gpu bench bench-e2e lint

# SGLang 0.5.17 (about 9 GB with its CUDA wheels) installs and imports on CPU-only machines too.
install:
	$(PYTHON) -m pip install -e ".[sglang,test,bench]"

# CPU: every kernel under the Triton interpreter; GPU-only tests are skipped.
test:
	TRITON_INTERPRET=1 $(PYTEST) -q tests

# GPU: the same tests with real tensor cores, plus the `gpu`-marked ones.
test-gpu:
	$(PYTEST) -q tests

bench:
	$(PYTEST) -q bench --benchmark-json=bench-results.json --benchmark-columns=median,rounds
	$(PYTHON) -m bench.report bench-results.json

# End to end through SGLang engines (GPU): ms/token and tok/s per mode, same run.
bench-e2e:
	$(PYTHON) -m bench.e2e.speed --model llama-8b --out bench-e2e-llama-8b.json
	$(PYTHON) -m bench.e2e.speed --model llama-1b --out bench-e2e-llama-1b.json

lint:
	$(PYTHON) -m ruff check heal_kernels heal_sglang bench tests
