"""A run's finished benchmarks, one JSON line each, written as each one finishes.

pytest-benchmark writes its JSON when the session ends, so a run killed before that (a GPU
call's time limit, an engine that hangs, an out-of-memory kill) loses every figure it had
measured. ``--bench-journal PATH`` (``make bench`` passes ``<result>.partial.jsonl``) appends
each benchmark to PATH the moment its test passes, in the JSON file's own entry format;
``python -m bench.report PATH`` and ``make bench-compare`` read it like a result file.

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


def start(path: str) -> None:
    """A new journal at PATH with its header line; refuses to write over an earlier run's."""
    if os.path.exists(path) and os.path.getsize(path) > 0:
        raise pytest.UsageError(f"--bench-journal: {path} already holds a run's journal; "
                                "give a new path (or move that file away)")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    _write_line(path, {"journal": HEADER, "datetime": datetime.datetime.now().isoformat(timespec="seconds"),
                       "machine_info": {"node": platform.node(), "python_version": platform.python_version()}})


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
    parser.getgroup("heal bench journal").addoption(
        "--bench-journal", default="", help="append each finished benchmark to this JSONL file (bench/journal.py)")


def pytest_configure(config):
    path = config.getoption("--bench-journal")
    if path and not hasattr(config, "workerinput"):
        start(path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    path = item.config.getoption("--bench-journal")
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    stats = getattr(fixture, "stats", None)
    if path and stats is not None and outcome.excinfo is None:
        append(path, stats.as_dict(include_data=False))
