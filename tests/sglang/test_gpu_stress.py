"""Bitwise under stress on the GPU (issue 12, section 1): bench.e2e.stress on llama-small.

Two `python -m sglang.launch_server --quantization heal` servers (the main one, and one with a small
KV pool for the exhaustion scenario); every request that completes under KV-pool exhaustion, aborts,
a 256-client burst and a long run must give its reference's tokens and logprobs bitwise, and after
each scenario the server must be healthy with its KV pool's free size back to the idle value.

Sized for about 6 minutes on one H200.  ``HEAL_STRESS_LONG_S`` sets the long run's seconds (default
120; the issue asks for >= 600, which needs its own call: see docs/RELIABILITY.md),
``HEAL_RESULTS=<dir>`` keeps the harness's output (summary.json, summary.md, outcomes, server logs).
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu

ROOT = os.environ.get("HEAL_MODELS", "/tmp/heal-models")
LONG_S = float(os.environ.get("HEAL_STRESS_LONG_S", "120"))
TIMEOUT_S = float(os.environ.get("HEAL_STRESS_TIMEOUT_S", "900"))  # then SIGTERM: the harness stops its servers


def test_heal_is_bitwise_under_exhaustion_aborts_bursts_and_a_long_run(tmp_path):
    from bench.e2e import models

    path = models.make("llama-small", f"{ROOT}/llama-small")
    out = os.path.join(os.environ.get("HEAL_RESULTS") or str(tmp_path), "stress-llama-small")
    cmd = [sys.executable, "-m", "bench.e2e.stress", "--model-path", path, "--out", out,
           "--scenarios", "exhaustion,aborts,bursts,long", "--duration", str(LONG_S),
           "--prompts", "128", "--max-new", "64", "--clients", "256", "--burst-window", "2",
           "--abort-keep", "16", "--abort-cancel", "8", "--abort-new", "1024",
           "--rate", "8", "--max-inflight", "64",
           "--max-total-tokens", "4096", "--exhaust-requests", "32", "--exhaust-min-new", "128",
           "--exhaust-max-new", "256", "--startup-timeout", "300", "--request-timeout", "300"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the harness stops its servers on SIGTERM
        stdout, stderr = proc.communicate(timeout=120)
        pytest.fail(f"stress harness ran past {TIMEOUT_S} s:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    print(stdout[-6000:])
    summary_path = os.path.join(out, "summary.json")
    assert os.path.exists(summary_path), stdout[-3000:] + stderr[-3000:]
    with open(summary_path) as f:
        summary = json.load(f)
    rows = {row["scenario"]: row for row in summary["rows"]}
    assert set(rows) == {"exhaustion", "aborts", "bursts", "long"}, stderr[-3000:]
    for name, row in rows.items():
        brief = {k: row.get(k) for k in ("served", "completed", "failed", "identical", "compared", "healthy",
                                         "pool_before", "pool_after", "log")}
        assert row["completed"] > 0, f"{name}: {brief}"
        assert row["failed"] == 0, f"{name}: requests that should have completed did not: {brief}"
        assert row["identical"] == row["compared"] == row["completed"] - row["uncomparable"], f"{name}: {brief}"
        assert row["partial_identical"] == row["partial_compared"], f"{name}: {brief}"
        assert row["healthy"], f"{name}: /health_generate failed"
        assert row["pool_back"], f"{name}: KV pool not back to idle: {brief}"
        assert row["log"]["leak_lines"] == 0, f"{name}: SGLang's idle check found a leak: {row['log']}"
    assert rows["exhaustion"]["retracted_reqs"] > 0, f"no retraction happened: {rows['exhaustion']}"
    assert rows["aborts"]["disconnected"] > 0 and rows["aborts"]["aborted_by_endpoint"] > 0, rows["aborts"]
    assert rows["bursts"]["served"] == 256
    assert rows["long"]["load_s"] >= 0.9 * LONG_S, rows["long"]
    assert summary["passed"] and proc.returncode == 0
