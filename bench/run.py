"""`make bench`: the kernel and end-to-end pytest-benchmark suites in one run, then the report.

    python -m bench.run [--set quick|full] [pytest options, e.g. --e2e-modes bf16,heal --model-path M]

Results: bench/results/<gpu>-<date>.json (pytest-benchmark JSON) and, beside it,
<gpu>-<date>.md with the tables and PNG plots (bench/report.py). Refuses, in one line and
with a non-zero exit, on a machine without a CUDA GPU: nothing is timed under the interpreter.
While it runs, each finished benchmark is also appended to <gpu>-<date>.partial.jsonl (bench/journal.py),
so a run killed before the end keeps its figures; a complete run removes that file.
``--resume <gpu>-<date>.partial.jsonl`` (with the cut run's options) runs only what that journal lacks
and writes the whole run's JSON: a suite longer than one GPU call, over several.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from bench import journal


def gpu_problem() -> str | None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "TRITON_INTERPRET is set: the kernels would run in the CPU interpreter"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    return None


def results_path(device_name: str, date: str | None = None, root: str = "bench/results") -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower().replace("nvidia", "")).strip("-")
    base = os.path.join(root, f"{slug}-{date or time.strftime('%Y-%m-%d')}")
    path, i = base + ".json", 2
    # never overwrite an earlier run of the same day, finished or cut short (its journal)
    while os.path.exists(path) or os.path.exists(journal.journal_path(path)):
        path, i = f"{base}-{i}.json", i + 1
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="full", choices=("quick", "full"))
    ap.add_argument("--out", default="", help="result JSON (default bench/results/<gpu>-<date>.json)")
    ap.add_argument("--resume", default="", metavar="PARTIAL",
                    help="continue the run cut short whose journal is PARTIAL (<result>.partial.jsonl); give "
                         "the same options as that run")
    a, rest = ap.parse_known_args(argv)
    problem = gpu_problem()
    if problem:
        print(f"make bench: no CUDA GPU here ({problem}); benchmarks time real GPUs only.", file=sys.stderr)
        return 2
    import pytest
    import torch

    if a.resume:
        try:
            out = resumed_out(a.resume, a.out)
        except ValueError as e:
            print(f"make bench: {e}", file=sys.stderr)
            return 2
    else:
        out = a.out or results_path(torch.cuda.get_device_name())
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    partial = journal.journal_path(out)
    suites = ["bench/e2e/test_bench_e2e.py"] if a.set == "quick" else ["bench"]
    args = [*suites, "-v", "-s", "-p", "no:randomly", f"--e2e-set={a.set}", f"--benchmark-json={out}",
            f"--bench-journal={partial}", *(["--bench-resume"] if a.resume else []),
            "--benchmark-columns=median,iqr,rounds", *rest]
    print(f"make bench ({a.set}): pytest {' '.join(args)}", flush=True)
    print(f"make bench: each finished benchmark is kept in {partial} until the run ends "
          f"(python -m bench.report {partial} renders a run cut short)", flush=True)
    rc = pytest.main(args)
    finish(out, partial)
    return int(rc)


def resumed_out(partial: str, out: str = "") -> str:
    """The result JSON of the run whose journal is ``partial``; ValueError (naming --resume) where that
    run cannot be continued."""
    suffix = ".partial.jsonl"
    if not partial.endswith(suffix):
        raise ValueError(f"--resume {partial}: expected a run's journal, <result>{suffix}")
    derived = partial[: -len(suffix)] + ".json"
    if out and os.path.abspath(out) != os.path.abspath(derived):
        raise ValueError(f"--resume {partial} continues {derived}; --out {out} names another file")
    if not os.path.exists(partial):
        raise ValueError(f"--resume {partial}: no such journal")
    if os.path.exists(derived):
        raise ValueError(f"--resume {partial}: {derived} exists, so that run ended; start a new one")
    journal.read(partial)  # a corrupt journal is refused here, naming its line
    return derived


def finish(out: str, partial: str) -> str | None:
    """After the suites: the report from the result JSON, which takes in any benchmark only the journal
    holds (those of the runs a resumed run continues), after which the journal is removed; without the
    JSON (pytest-benchmark never wrote it), from the journal, which is kept.
    Returns the file the report came from, or None where no benchmark finished."""
    import json

    from bench import report

    if os.path.exists(out):
        source = out
        if os.path.exists(partial):
            with open(out) as f:
                data = json.load(f)
            have = {b["fullname"] for b in data.get("benchmarks", [])}
            earlier = [b for b in journal.read(partial)["benchmarks"] if b["fullname"] not in have]
            if earlier:
                data["benchmarks"] = earlier + data.get("benchmarks", [])
                with open(out, "w") as f:
                    json.dump(data, f, indent=4)
            os.remove(partial)
    elif os.path.exists(partial) and journal.read(partial)["benchmarks"]:
        source = partial
        print(f"make bench: {out} was not written; the report comes from the finished benchmarks in {partial}",
              file=sys.stderr, flush=True)
    else:
        return None
    report.main([source, "--out", os.path.splitext(out)[0]])
    return source


if __name__ == "__main__":
    sys.exit(main())
