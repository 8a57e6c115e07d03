# heal-sglang: `make install` then `make test` on any machine; GPU targets need CUDA.
PYTHON ?= python3
PYTEST = $(PYTHON) -m pytest

.PHONY: install test test-gpu bench bench-compare mcr lint
BENCH ?= full

# SGLang 0.5.17 (about 9 GB with its CUDA wheels) installs and imports on CPU-only machines too.
install:
	$(PYTHON) -m pip install -e ".[sglang,test,bench]"

# CPU: every kernel under the Triton interpreter; GPU-only tests are skipped.
# SGLANG=0.5.23 (or 0.5.17): the same suite against that SGLang release, in its own virtual
# environment .venv-sglang-<release>, made and installed on first use (about 11 GB).
SGLANG ?=
EXTRA_0.5.17 = sglang
EXTRA_0.5.23 = sglang0523
SGLANG_VENV = .venv-sglang-$(SGLANG)

test:
ifeq ($(SGLANG),)
	TRITON_INTERPRET=1 $(PYTEST) -q tests
else
	@test -n "$(EXTRA_$(SGLANG))" || { echo "SGLANG=$(SGLANG): supported releases are 0.5.17 and 0.5.23"; exit 2; }
	test -x $(SGLANG_VENV)/bin/python || $(PYTHON) -m venv $(SGLANG_VENV)
	$(SGLANG_VENV)/bin/python -m pip install -e ".[$(EXTRA_$(SGLANG)),test,bench]"
	TRITON_INTERPRET=1 $(SGLANG_VENV)/bin/python -m pytest -q tests
endif

# GPU: the same tests with real tensor cores, plus the `gpu`-marked ones.
test-gpu:
	$(PYTEST) -q tests

# GPU: kernel and end-to-end pytest-benchmark suites, one JSON per run in bench/results/, then the
# report (markdown + plots beside it). BENCH=quick: the end-to-end subset that fits about 8 minutes.
# BENCH_ARGS passes pytest options, e.g. BENCH_ARGS="--e2e-modes bf16,heal --model-path /models/llama".
bench:
	$(PYTHON) -m bench.run --set $(BENCH) $(BENCH_ARGS)

# Which benchmarks moved beyond the run-to-run spread measured in the two files.
bench-compare:
	$(PYTHON) -m bench.compare $(OLD) $(NEW)

# MCR-Bench (GPU for runs; report and merge anywhere): e.g. MCR_ARGS="run --model llama-1b --out runs/1b".
mcr:
	$(PYTHON) -m bench.mcr $(MCR_ARGS)

lint:
	$(PYTHON) -m ruff check heal_kernels heal_sglang bench tests
