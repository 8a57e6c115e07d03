"""Benchmarks run on the GPU only (`make bench`); on a CPU machine they are skipped.

End-to-end options (bench/e2e/test_bench_e2e.py); comma-separated lists override the set:
  --e2e-set quick|full   which models, modes, variants and workloads (bench/e2e/workloads.py)
  --e2e-models           synthetic shapes of bench/e2e/models.py (llama-8b, llama-1b, ...)
  --model-path           a real checkpoint instead of the synthetic models
  --e2e-modes            bf16, det, fp32, layercast, heal
  --e2e-variants         serving variants of bench/e2e/engines.py (default, ctx4096, eager, tp2-default, tp4-default)
  --e2e-workloads        names in bench/e2e/workloads.py
  --bench-journal PATH   append each finished benchmark to PATH as it finishes (bench/journal.py): a run
                         killed before pytest-benchmark writes its JSON keeps its figures
  --bench-resume         continue that journal's run: the benchmarks it holds are not run again
  --e2e-shard I/N        run only the I-th of N parts (0-based): the (model, variant, workload) groups
                         cut into N contiguous runs, every mode of a group in the same part, so each ratio to
                         BF16 comes from one GPU; the kernel benchmarks run in part 0 only.
                         One process per GPU, then `python -m bench.report a.json b.json ...` merges.
"""

import pytest
import torch

# each finished benchmark journaled as it finishes (--bench-journal; bench/journal.py): its hooks, here
from bench.journal import deselect_finished, pytest_configure, pytest_runtest_call  # noqa: F401
from bench.journal import pytest_addoption as _journal_addoption


def pytest_addoption(parser):
    _journal_addoption(parser)
    g = parser.getgroup("heal e2e benchmarks")
    g.addoption("--e2e-set", default="full", choices=("quick", "full"))
    for name in ("models", "modes", "variants", "workloads"):
        g.addoption(f"--e2e-{name}", default="")
    g.addoption("--model-path", default="")
    g.addoption("--e2e-shard", default="", help="I/N: run the I-th of N parts of the suite (see bench/conftest.py)")
    g.addoption("--e2e-root", default="/tmp/heal-models", help="where synthetic checkpoints are made")


def e2e_cases(config) -> list[tuple]:
    from bench.e2e import engines
    from bench.e2e.workloads import FULL, QUICK, WORKLOADS

    chosen = dict(QUICK if config.getoption("--e2e-set") == "quick" else FULL)
    for name in ("models", "modes", "variants", "workloads"):
        v = config.getoption(f"--e2e-{name}")
        if v:
            chosen[name] = v.split(",")
    known = {"modes": engines.MODES, "variants": engines.VARIANTS, "workloads": WORKLOADS}
    for name, table in known.items():
        bad = [x for x in chosen[name] if x not in table]
        if bad:
            raise pytest.UsageError(f"--e2e-{name}: unknown {', '.join(bad)} (known: {', '.join(table)})")
    path = config.getoption("--model-path") or None
    models = [None] if path else chosen["models"]
    part, parts = shard(config.getoption("--e2e-shard"))
    groups = [(m, v, w) for m in models for v in chosen["variants"] for w in chosen["workloads"]]
    # contiguous runs (not round-robin), so a part starts as few (model, variant) engines as it can
    mine = set(groups[part * len(groups) // parts:(part + 1) * len(groups) // parts])
    return [(m, path, v, mode, w) for m in models for v in chosen["variants"] for mode in chosen["modes"]
            for w in chosen["workloads"] if (m, v, w) in mine]


def shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N); '' -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        part, parts = (int(x) for x in text.split("/"))
    except ValueError:
        part, parts = -1, 0
    if not 0 <= part < parts:
        raise pytest.UsageError(f"--e2e-shard: expected I/N with 0 <= I < N, got {text!r}")
    return part, parts


def pytest_generate_tests(metafunc):
    if "e2e_case" in metafunc.fixturenames:
        cases = e2e_cases(metafunc.config)
        ids = ["-".join(x for x in (m or "model", v, mode, w)) for m, _, v, mode, w in cases]
        metafunc.parametrize("e2e_case", cases, ids=ids)


def pytest_collection_modifyitems(config, items):
    deselect_finished(config, items)  # --bench-resume: what the journal holds already ran
    if shard(config.getoption("--e2e-shard"))[0] > 0:  # the kernel benchmarks belong to part 0
        keep = [i for i in items if "e2e_case" in getattr(i, "fixturenames", ())]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="benchmarks need a CUDA GPU")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def ceilings():
    """Measured ceilings of this GPU: device copy bandwidth and FP16/BF16 tensor-core rate."""
    from bench.timing import measure_ceilings

    return measure_ceilings()
