"""MCR-Bench result files: one JSONL per (mode, variant) under ``<out>/runs/``, resumable and mergeable.

A record is one example under one mode and variant::

    {"mode", "variant", "task", "id", "gold", "answer", "correct", "output_ids", "logprobs",
     "text", "model", "device", "sglang"}

Variants whose outputs depend on what else is in flight (all prompts together, chunking,
concurrent clients) are written whole, through a temporary file and a rename, so a run
that stops leaves either the complete variant or nothing of it. Variants that run one
prompt at a time (``b1``) append each record as it completes, so an interrupted run
continues where it stopped.

A (mode, variant) that could not run leaves ``<mode>__<variant>.skip.json`` instead: why it was
skipped (not runnable here) or failed (its engine did not start, or generation raised). The
report lists them; a later run that completes the variant removes the file.
"""

from __future__ import annotations

import json
import os
import re

RUNS = "runs"


def run_file(out: str, mode: str, variant: str) -> str:
    return os.path.join(out, RUNS, f"{mode}__{variant}.jsonl")


def _read(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # a record cut off by an interrupted append: dropped, it is redone
                continue
            raise ValueError(f"{path}:{i + 1}: not a JSON record ({e.msg})") from None
    return rows


def load(out: str) -> list[dict]:
    """Every record under ``out`` (a run folder)."""
    d = os.path.join(out, RUNS)
    if not os.path.isdir(d):
        raise ValueError(f"{out} holds no MCR-Bench results (no {RUNS}/ folder)")
    rows = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".jsonl"):
            rows += _read(os.path.join(d, name))
    return rows


def done(out: str, mode: str, variant: str) -> set[tuple[str, str]]:
    path = run_file(out, mode, variant)
    return {(r["task"], r["id"]) for r in _read(path)} if os.path.exists(path) else set()


def append(out: str, records: list[dict]) -> None:
    for r in records:
        path = run_file(out, r["mode"], r["variant"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(r) + "\n")


def write_whole(out: str, mode: str, variant: str, records: list[dict]) -> None:
    path = run_file(out, mode, variant)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def skip_file(out: str, mode: str, variant: str) -> str:
    return os.path.join(out, RUNS, f"{mode}__{variant}.skip.json")


def write_skip(out: str, mode: str, variant: str, reason: str, kind: str = "skipped") -> None:
    path = skip_file(out, mode, variant)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"mode": mode, "variant": variant, "kind": kind, "reason": reason}, f)
    os.replace(path + ".tmp", path)


def clear_skip(out: str, mode: str, variant: str) -> None:
    path = skip_file(out, mode, variant)
    if os.path.exists(path):
        os.remove(path)


def skips(out: str) -> list[dict]:
    """The skipped or failed (mode, variant)s under ``out``, without those that have results since."""
    d = os.path.join(out, RUNS)
    if not os.path.isdir(d):
        return []
    rows = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".skip.json"):
            with open(os.path.join(d, name)) as f:
                rows.append(json.load(f))
    return rows


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(s).lower()).strip("-") or "unknown"


def merge(sources: list[str], out: str) -> int:
    """Merge run folders (e.g. one per GPU) into ``out``. A (mode, variant) found on more than one
    device becomes one variant per device, ``<variant>@<device>``, so that identity across
    devices is measured like identity across batch sizes. Returns the number of records."""
    rows = []
    for src in sources:
        rows += load(src)
    devices: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        devices.setdefault((r["mode"], r["variant"]), set()).add(r.get("device", "unknown"))
    merged: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        key = (r["mode"], r["variant"])
        if len(devices[key]) > 1:
            r = {**r, "variant": f"{r['variant']}@{_slug(r.get('device', 'unknown'))}"}
        merged.setdefault((r["mode"], r["variant"]), []).append(r)
    for (mode, variant), recs in merged.items():
        seen = set()
        for r in recs:
            k = (r["task"], r["id"])
            if k in seen:
                raise ValueError(f"merge: {mode} {variant} has example {k} twice (two runs of the same device?)")
            seen.add(k)
        write_whole(out, mode, variant, recs)
    have = set(merged)
    for src in sources:
        for sk in skips(src):
            if (sk["mode"], sk["variant"]) not in have:
                write_skip(out, sk["mode"], sk["variant"], sk["reason"], sk.get("kind", "skipped"))
    return len(rows)
