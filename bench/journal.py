"""A run's finished benchmarks, one JSON line each, written as each one finishes.

pytest-benchmark writes its JSON when the session ends, so a run killed before that (a GPU
call's time limit, an engine that hangs, an out-of-memory kill) loses every figure it had
measured. ``--bench-journal PATH`` (``make bench`` passes ``<result>.partial.jsonl``) appends
each benchmark to PATH the moment its test passes, in the JSON file's own entry format;
``python -m bench.report PATH`` and ``make bench-compare`` read it like a result file.
``--bench-resume`` continues the journal of a run cut short: the benchmarks it holds are
deselected, the rest run and are appended (``python -m bench.run --resume PATH``), so a suite
longer than one GPU call is measured over several.

A pytest plugin: bench/conftest.py imports its hooks; elsewhere ``-p bench.journal``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform

import pytest

HEADER = "heal-bench-journal"


def journal_path(result_json: str) -> str:
    """Where ``make bench`` journals a run whose result file is ``result_json``."""
    return os.path.splitext(result_json)[0] + ".partial.jsonl"


def _write_line(path: str, record: dict) -> None:
    line = json.dumps(record, default=str) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())  # the next benchmark may be the one that gets the process killed


def start(path: str, resume: bool = False) -> set[str]:
    """A journal at PATH with a header line for this run; returns the benchmarks it already holds.

    A new run refuses to write over an earlier run's journal; ``resume`` requires one (a valid journal),
    cutting off a last line its kill left half-written.
    """
    exists = os.path.exists(path) and os.path.getsize(path) > 0
    if exists and not resume:
        raise pytest.UsageError(f"--bench-journal: {path} already holds a run's journal; give a new path, "
                                "or --bench-resume to continue it")
    if resume and not exists:
        raise pytest.UsageError(f"--bench-resume: {path} holds no journal to continue")
    done = set()
    if exists:
        try:
            done = {b["fullname"] for b in read(path)["benchmarks"]}
        except ValueError as e:
            raise pytest.UsageError(f"--bench-resume: {e}") from None
        with open(path, "rb+") as f:  # drop a half-written last line before appending after it
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _write_line(path, {"journal": HEADER, "datetime": datetime.datetime.now().isoformat(timespec="seconds"),
                       "machine_info": {"node": platform.node(), "python_version": platform.python_version()},
                       "resumed": resume})
    return done


def append(path: str, entry: dict) -> None:
    _write_line(path, entry)


def read(path: str) -> dict:
    """The journal as a pytest-benchmark result (``datetime``, ``machine_info``, ``benchmarks``).

    A last line cut off mid-write (the kill came then) is left out; any other bad line raises
    ValueError naming the file and line.
    """
    with open(path) as f:
        lines = f.read().split("\n")
    complete = lines[:-1]  # every whole line ends with "\n": the last piece is "" or a cut-off line
    data = {"datetime": "?", "machine_info": {}, "benchmarks": []}
    for i, line in enumerate(complete, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {i}: not a JSON record ({e.msg})") from None
        if rec.get("journal") == HEADER:
            if i == 1:  # the run's start; a resumed run adds a header of its own
                data["datetime"], data["machine_info"] = rec.get("datetime", "?"), rec.get("machine_info", {})
        elif "fullname" in rec and "stats" in rec:
            data["benchmarks"].append(rec)
        else:
            raise ValueError(f"{path}, line {i}: neither the journal's header nor a benchmark")
    if not complete or json.loads(complete[0]).get("journal") != HEADER:
        raise ValueError(f"{path}: not a bench journal (its first line is not the header)")
    return data


def load_results(path: str) -> dict:
    """A pytest-benchmark JSON file or a journal (``.jsonl``), in the JSON file's shape."""
    if path.endswith(".jsonl"):
        return read(path)
    with open(path) as f:
        return json.load(f)


def pytest_addoption(parser):
    g = parser.getgroup("heal bench journal")
    g.addoption("--bench-journal", default="", help="append each finished benchmark to this JSONL file "
                "(bench/journal.py)")
    g.addoption("--bench-resume", action="store_true", help="continue --bench-journal's run: skip the "
                "benchmarks it holds")


def pytest_configure(config):
    path = config.getoption("--bench-journal")
    resume = config.getoption("--bench-resume")
    if resume and not path:
        raise pytest.UsageError("--bench-resume needs --bench-journal (the journal to continue)")
    if not path:
        return
    if hasattr(config, "workerinput"):  # benchmarks are timed one at a time; a journal has one writer
        raise pytest.UsageError("--bench-journal: not with pytest-xdist workers (-n); run the benchmarks serially")
    config._bench_journal_done = start(path, resume)


def deselect_finished(config, items) -> None:
    """With --bench-resume, deselect the tests whose benchmarks the journal already holds."""
    done = getattr(config, "_bench_journal_done", None)
    if not done:
        return
    finished = [i for i in items if i.nodeid in done]
    if finished:
        config.hook.pytest_deselected(items=finished)
        items[:] = [i for i in items if i.nodeid not in done]


def pytest_collection_modifyitems(config, items):
    deselect_finished(config, items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    path = item.config.getoption("--bench-journal")
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    stats = getattr(fixture, "stats", None)
    if path and stats is not None and outcome.excinfo is None:
        append(path, stats.as_dict(include_data=False))
