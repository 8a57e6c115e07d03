"""Bitwise under stress (issue 12, section 1): a real heal server under KV-pool exhaustion,
aborts, bursts and a long run, every completed request compared bit for bit with its reference.

    python -m bench.e2e.stress --model-path /tmp/heal-models/llama-small --out /tmp/stress
    python -m bench.e2e.stress --model-path M --scenarios bursts,long --duration 600 --out DIR

The server is ``python -m sglang.launch_server --model-path M --quantization heal
--attention-backend heal`` on a free loopback port.  A pool of request specs (``input_ids`` of 1 to
3000 tokens, random ``max_new_tokens``, ``ignore_eos``; greedy or seeded sampling with
``sampling_seed``; half of them with ``return_logprob`` and the top-5 logprobs) is run one request
at a time on the idle server: that is the reference.  Each scenario then sends the same request
bodies under load; a request that completes must give the reference's output ids, and where it
asked for them its output-token logprobs and top logprobs, bitwise (floats compared by their IEEE
bits).  A logprob SGLang serialises as null (orjson writes NaN and +-inf as null) compares as null.

Scenarios
- ``exhaustion``: a second server with a small ``--max-total-tokens`` and a low
  ``--schedule-conservativeness``, many concurrent long requests, so the scheduler retracts running
  requests (log line "KV cache pool is full. Retract requests."; counter
  ``sglang:num_retracted_requests_total`` with ``--enable-metrics``) and prefills them again.  Its
  references are run alone on that server.  Retraction is recorded; without it the row fails.
- ``aborts``: long streaming requests cancelled after a few chunks, by closing the connection and by
  ``POST /abort_request {"rid": ...}``, while pool requests (streamed and not) keep decoding.
- ``bursts``: one request per client (256 by default) at uniformly random arrival times in a short
  window, every pool spec once: prompt lengths 1..3000, greedy, seeded and logprob requests mixed.
- ``long``: a self-stopping Poisson load generator for ``--duration`` seconds (bounded in-flight
  count and request count), pool specs drawn at random, a few of them cancelled mid-stream.

After each scenario: ``GET /health_generate`` (a real one-token generation) must answer 200, and
the KV pool's free size read from ``GET /v1/loads`` (``max_total_num_tokens - num_used_tokens``,
where SGLang counts radix-cache tokens that can be evicted as free) must come back to its idle
value, with no running or waiting request.  Output: ``summary.json``, ``summary.md``, the per-request
outcomes (``outcomes-<scenario>.jsonl``) and the server logs under ``--out``; the exit code is 0 only
if every scenario passed.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import http.client
import importlib.util
import json
import math
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

# ---------------------------------------------------------------------------------------------
# Request specs and schedules (pure, seeded)
# ---------------------------------------------------------------------------------------------

KINDS = (("greedy", False), ("greedy", True), ("seeded", False), ("seeded", True))  # (sampling, logprob)
SAMPLED = {"temperature": 0.7, "top_p": 0.9}
TOP_LOGPROBS = 5  # one value for every logprob request: SGLang takes the top-k of the largest asked
SEED_BASE = 1234


@dataclasses.dataclass(frozen=True)
class Spec:
    key: str
    input_ids: tuple
    max_new_tokens: int
    sampling: str  # "greedy" or "seeded"
    logprob: bool
    seed: int | None = None


def make_specs(n: int, seed: int, vocab: int, min_len: int = 1, max_len: int = 3000, min_new: int = 1,
               max_new: int = 256, prefix: str = "p") -> list[Spec]:
    """``n`` specs: prompt lengths uniform in [min_len, max_len] (the first two exactly min_len and
    max_len), max_new_tokens uniform in [min_new, max_new], the four kinds equally often (shuffled)."""
    if not (1 <= min_len <= max_len and 1 <= min_new <= max_new and n >= 1 and vocab > 20):
        raise ValueError(f"bad spec ranges: n={n} len=[{min_len},{max_len}] new=[{min_new},{max_new}] vocab={vocab}")
    rng = random.Random(seed)
    lens = [rng.randint(min_len, max_len) for _ in range(n)]
    lens[0] = min_len
    if n > 1:
        lens[1] = max_len
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]
    rng.shuffle(kinds)
    specs = []
    for i, (length, (sampling, logprob)) in enumerate(zip(lens, kinds, strict=True)):
        ids = tuple(rng.randrange(10, vocab - 10) for _ in range(length))
        specs.append(Spec(key=f"{prefix}{i}", input_ids=ids, max_new_tokens=rng.randint(min_new, max_new),
                          sampling=sampling, logprob=logprob,
                          seed=SEED_BASE + seed * 100_003 + i if sampling == "seeded" else None))
    return specs


def body(spec: Spec, rid: str | None = None, stream: bool = False) -> dict:
    """The /generate body of ``spec``; the reference and the stressed request differ only in rid/stream."""
    sp = {"max_new_tokens": spec.max_new_tokens, "ignore_eos": True}
    if spec.sampling == "greedy":
        sp["temperature"] = 0.0
    else:
        sp.update(SAMPLED, sampling_seed=spec.seed)
    b = {"input_ids": list(spec.input_ids), "sampling_params": sp}
    if spec.logprob:
        b.update(return_logprob=True, top_logprobs_num=TOP_LOGPROBS)
    if rid is not None:
        b["rid"] = rid
    if stream:
        b["stream"] = True
    return b


def burst_schedule(n_clients: int, n_specs: int, window_s: float, seed: int) -> list[tuple[float, int]]:
    """(arrival offset in s, spec index) per client, sorted by arrival: every spec once (cycled if
    there are more clients than specs), arrivals uniform in [0, window_s)."""
    rng = random.Random(seed)
    order = list(range(n_specs))
    rng.shuffle(order)
    idx = [order[i % n_specs] for i in range(n_clients)]
    return sorted((rng.uniform(0.0, window_s), j) for j in idx)


def long_schedule(duration_s: float, rate: float, n_specs: int, seed: int, cancel_frac: float = 0.05,
                  max_requests: int | None = None) -> list[tuple[float, int, str]]:
    """Poisson arrivals (rate per s) in [0, duration_s): (offset, spec index, action), action one of
    'complete', 'disconnect', 'abort' (each cancel kind cancel_frac/2).  At most max_requests
    (default 2 * rate * duration + 16) entries."""
    if rate <= 0 or duration_s < 0:
        raise ValueError("rate must be > 0 and duration >= 0")
    cap = max_requests if max_requests is not None else int(2 * rate * duration_s) + 16
    rng = random.Random(seed)
    out, t = [], rng.expovariate(rate)
    while t < duration_s and len(out) < cap:
        u = rng.random()
        action = "disconnect" if u < cancel_frac / 2 else "abort" if u < cancel_frac else "complete"
        out.append((t, rng.randrange(n_specs), action))
        t += rng.expovariate(rate)
    return out


def abort_plan(survivors: list[int], n_disconnect: int, n_abort: int, seed: int, k_range=(2, 6)):
    """Entries (kind, index, stream, k): ('keep', spec index, stream?, 0) for every survivor (every
    other one streamed), ('disconnect'|'abort', cancel-spec index, True, k chunks before cancelling)."""
    rng = random.Random(seed)
    plan = [("keep", j, i % 2 == 1, 0) for i, j in enumerate(survivors)]
    plan += [("disconnect", i, True, rng.randint(*k_range)) for i in range(n_disconnect)]
    plan += [("abort", n_disconnect + i, True, rng.randint(*k_range)) for i in range(n_abort)]
    rng.shuffle(plan)
    return plan


# ---------------------------------------------------------------------------------------------
# Outputs and their bitwise comparison
# ---------------------------------------------------------------------------------------------


def record(out: dict) -> dict:
    """What is compared of a /generate output: output ids, and where returned the output-token
    logprobs (with the ids they name) and the top logprobs ([logprob, id] per entry)."""
    meta = out.get("meta_info") or {}
    rec = {"ids": list(out["output_ids"])}
    lps = meta.get("output_token_logprobs")
    if lps is not None:
        rec["logprobs"] = [t[0] for t in lps]
        rec["logprob_ids"] = [t[1] for t in lps]
    top = meta.get("output_top_logprobs")
    if top is not None:
        rec["top"] = [None if pos is None else [[e[0], e[1]] for e in pos] for pos in top]
    return rec


def _same(a, b) -> bool:
    """Bitwise equality: floats by their IEEE-754 double bits (so -0.0 != 0.0, NaN == same NaN),
    lists elementwise, anything else by type and value."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def compare(ref: dict, got: dict, prefix: bool = False) -> tuple[bool, str | None, int | None]:
    """(identical, what differs, first differing token position).  ``prefix``: ``got`` is a partial
    output (a cancelled stream) and must equal the start of ``ref``."""
    keys = ("ids", "logprobs", "logprob_ids", "top")
    for k in keys:
        if (k in ref) != (k in got):
            return False, f"{k} present in only one", None
    n_ref, n_got = len(ref["ids"]), len(got["ids"])
    if prefix:  # a streamed chunk may name more ids than logprobs: compare what every list covers
        n_got = min(len(got[k]) for k in keys if k in got)
    if (n_got > n_ref) if prefix else (n_got != n_ref):
        return False, f"length {n_got} vs reference {n_ref}", min(n_got, n_ref)
    for i in range(n_got):
        for k in keys:
            if k in ref and not _same(ref[k][i], got[k][i]):
                return False, k, i
    for k in keys:  # per-token lists longer than ids (should not happen) differ too
        if not prefix and k in ref and len(got[k]) != n_got:
            return False, f"{k} has {len(got[k])} entries for {n_got} ids", None
    return True, None, None


def percentile(values, q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]) of values; None when empty."""
    v = sorted(values)
    if not v:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    return v[max(0, math.ceil(q / 100 * len(v)) - 1)]


def pool_back(before: dict | None, after: dict | None) -> bool:
    """The KV pool is back to idle: same free size as before the scenario, nothing running or waiting."""
    if not before or not after or before.get("free") is None or after.get("free") is None:
        return False
    return (after["free"] == before["free"] and after.get("running", 0) == 0 and after.get("waiting", 0) == 0)


def summarize(name: str, outcomes: list[dict], healthy: bool, pool_before: dict | None, pool_after: dict | None,
              extra: dict | None = None) -> dict:
    """A report row from the request outcomes.  An outcome: {"intent": "complete"|"disconnect"|"abort",
    "status": "completed"|"cancelled"|"aborted"|"error", "latency_s", "compared": bool, "identical": bool}."""
    done = [o for o in outcomes if o["status"] == "completed"]
    lat = [o["latency_s"] for o in done]
    compared = [o for o in done if o.get("compared")]
    partial = [o for o in outcomes if "partial_identical" in o]
    row = {
        "scenario": name,
        "served": len(outcomes),
        "completed": len(done),
        "cancelled": sum(o["status"] in ("cancelled", "aborted") and o["intent"] != "complete" for o in outcomes),
        "failed": sum(o["status"] != "completed" and o["intent"] == "complete" for o in outcomes),
        "errors": sum(o["status"] == "error" for o in outcomes),
        "compared": len(compared),
        "identical": sum(bool(o.get("identical")) for o in compared),
        # which request kinds (greedy/seeded, +logprob) and which field differed, for a failed row
        "differing": dict(collections.Counter(f"{o.get('kind', '?')}: {o.get('differs')}"
                                              for o in compared if not o.get("identical"))),
        "uncomparable": sum(not o.get("compared") for o in done),  # completed, but no reference (a late cancel)
        "partial_compared": len(partial),  # cancelled streams whose output so far is a reference's prefix
        "partial_identical": sum(bool(o["partial_identical"]) for o in partial),
        "p50_s": percentile(lat, 50),
        "p99_s": percentile(lat, 99),
        "healthy": healthy,
        "pool_before": pool_before,
        "pool_after": pool_after,
        "pool_back": pool_back(pool_before, pool_after),
    }
    row.update(extra or {})
    row["passed"] = passed(row)
    return row


def passed(row: dict) -> bool:
    ok = (row["healthy"] and row["pool_back"] and row["completed"] > 0 and row["failed"] == 0
          and row["compared"] + row.get("uncomparable", 0) == row["completed"] and row["compared"] > 0
          and row["identical"] == row["compared"]
          and row.get("partial_identical", 0) == row.get("partial_compared", 0))
    if row["scenario"] == "exhaustion":
        ok = ok and bool(row.get("retracted_reqs"))
    if row["scenario"] == "aborts":
        ok = ok and row.get("disconnected", 0) > 0 and row.get("aborted_by_endpoint", 0) > 0
    return bool(ok)


def markdown(rows: list[dict]) -> str:
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    def pool(p):
        return "-" if not p or p.get("free") is None else f"{p['free']}/{p['total']}"

    lines = ["| scenario | served | completed | cancelled | failed | identical/compared | p50 s | p99 s | "
             "healthy | pool free before | pool free after | notes | passed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"]
    for r in rows:
        notes = []
        if "retracted_reqs" in r:
            notes.append(f"retracted {r['retracted_reqs']} ({r.get('retract_events', 0)} events)")
        if "disconnected" in r:
            notes.append(f"disconnected {r['disconnected']}, aborted {r['aborted_by_endpoint']}")
        if "duration_s" in r:
            notes.append(f"{r['duration_s']:.0f} s of load")
        if r.get("differing"):
            notes.append("differing: " + ", ".join(f"{k} x{n}" for k, n in sorted(r["differing"].items())))
        lines.append(f"| {r['scenario']} | {r['served']} | {r['completed']} | {r['cancelled']} | {r['failed']} | "
                     f"{r['identical']}/{r['compared']} | {f(r['p50_s'])} | {f(r['p99_s'])} | "
                     f"{'yes' if r['healthy'] else 'NO'} | {pool(r['pool_before'])} | {pool(r['pool_after'])} | "
                     f"{'; '.join(notes)} | {'yes' if r['passed'] else 'NO'} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Log evidence
# ---------------------------------------------------------------------------------------------

RETRACT_RE = re.compile(r"KV cache pool is full\. Retract requests\. #retracted_reqs: (\d+)")


def log_evidence(text: str) -> dict:
    """Counts in a stretch of server log: retraction events and requests, client disconnects, SGLang's
    idle memory-leak check, tracebacks."""
    retracts = [int(m) for m in RETRACT_RE.findall(text)]
    return {"retract_events": len(retracts), "retracted_reqs": sum(retracts),
            "disconnect_lines": len(re.findall(r"disconnected", text, flags=re.IGNORECASE)),
            "leak_lines": text.count("memory leak detected"),
            "tracebacks": text.count("Traceback (most recent call last)")}


def metric(text: str, name: str) -> float | None:
    """Sum of a Prometheus metric's samples (all label sets) in /metrics text; None if absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (len(line) > len(name) and line[len(name)] in " {"):
            total += float(line.rsplit(None, 1)[-1])
            seen = True
    return total if seen else None


# ---------------------------------------------------------------------------------------------
# HTTP client (stdlib only: the GPU machine's bundle has neither aiohttp nor httpx)
# ---------------------------------------------------------------------------------------------


def _conn(base: str, timeout: float) -> http.client.HTTPConnection:
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def get(base: str, path: str, timeout: float = 30) -> tuple[int, bytes]:
    c = _conn(base, timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def post(base: str, path: str, payload: dict, timeout: float = 30) -> tuple[int, bytes]:
    c = _conn(base, timeout)
    try:
        c.request("POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def _final_status(status: int, out: dict | None) -> str:
    if status != 200 or out is None or "error" in out:
        return "error"
    fr = (out.get("meta_info") or {}).get("finish_reason")
    kind = fr.get("type") if isinstance(fr, dict) else fr
    if kind in ("length", "stop"):
        return "completed"
    return "aborted" if kind == "abort" else "error"


def generate(base: str, payload: dict, timeout: float, cancel_after: int = 0, on_cancel=None) -> dict:
    """POST /generate.  Streaming bodies are read as server-sent events ('data: {json}', then
    'data: [DONE]'); with ``cancel_after`` k > 0, after the k-th chunk ``on_cancel`` is called (None:
    the connection is closed there, a client disconnect; else e.g. an /abort_request) and reading goes
    on.  Returns {status, latency_s, out (the final output or last chunk), chunks, http}."""
    t0 = time.perf_counter()
    c = _conn(base, timeout)
    res = {"status": "error", "out": None, "chunks": 0, "http": None, "error": None}
    try:
        c.request("POST", "/generate", body=json.dumps(payload), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        res["http"] = r.status
        if not payload.get("stream"):
            raw = r.read()
            try:
                res["out"] = json.loads(raw)
            except ValueError:
                res["error"] = raw[:500].decode(errors="replace")
            res["status"] = _final_status(r.status, res["out"])
        else:
            cancelled = False
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                res["out"] = json.loads(data)
                res["chunks"] += 1
                if cancel_after and res["chunks"] == cancel_after and not cancelled:
                    cancelled = True
                    if on_cancel is None:
                        res["status"] = "cancelled"
                        r.close()
                        return res
                    on_cancel()
            res["status"] = _final_status(r.status, res["out"])
    except (OSError, http.client.HTTPException, ValueError) as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        c.close()
        res["latency_s"] = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_LIVE: set = set()  # servers running now, stopped on SIGTERM before anything else


def _on_sigterm(signum, frame):
    for srv in list(_LIVE):
        srv.kill()
    raise SystemExit(128 + signum)


class Server:
    """`python -m sglang.launch_server --model-path M --quantization heal` on a free loopback port,
    output to ``log_path``; its own process group, so stopping it stops SGLang's children too."""

    def __init__(self, model_path: str, args: list[str], log_path: str, startup_timeout: float = 600,
                 env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model_path,
                    "--quantization", "heal", "--attention-backend", "heal", "--host", "127.0.0.1",
                    "--port", str(self.port), *args]
        self.startup_timeout = startup_timeout
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def __enter__(self):
        self._log = open(self.log_path, "w")
        self._log.write(" ".join(self.cmd) + "\n")
        self._log.flush()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        _LIVE.add(self)
        deadline = time.time() + self.startup_timeout
        while True:
            failed = None
            if self.proc.poll() is not None:
                failed = f"server exited with {self.proc.returncode}"
            else:
                try:
                    if get(self.base, "/health", timeout=5)[0] == 200:
                        return self
                except OSError:
                    pass
                if time.time() > deadline:
                    failed = f"server not healthy in {self.startup_timeout} s"
            if failed:
                self.__exit__(None, None, None)
                raise RuntimeError(f"{failed}:\n{self.log_tail()}")
            time.sleep(2)

    def kill(self):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __exit__(self, *exc):
        _LIVE.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.kill()  # stragglers of the group (schedulers)
        self._log.close()

    def log_size(self) -> int:
        return os.path.getsize(self.log_path)

    def log_since(self, offset: int) -> str:
        with open(self.log_path, errors="replace") as f:
            f.seek(offset)
            return f.read()

    def log_tail(self, n: int = 4000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-n:]

    def healthy(self) -> bool:
        try:
            return get(self.base, "/health_generate", timeout=60)[0] == 200
        except OSError:
            return False

    def pool(self) -> dict | None:
        """KV pool from GET /v1/loads (summed over DP ranks): free = max_total_num_tokens - num_used_tokens."""
        try:
            status, raw = get(self.base, "/v1/loads?include=core", timeout=30)
            loads = json.loads(raw)["loads"] if status == 200 else []
        except (OSError, ValueError, KeyError):
            return None
        if not loads:
            return None
        total = sum(x["max_total_num_tokens"] for x in loads)
        used = sum(x["num_used_tokens"] for x in loads)
        return {"free": total - used, "total": total, "used": used,
                "running": sum(x["num_running_reqs"] for x in loads),
                "waiting": sum(x["num_waiting_reqs"] for x in loads)}

    def idle_pool(self, timeout: float = 60) -> dict | None:
        """The pool once nothing runs or waits and two readings agree (or timeout): the idle value."""
        deadline, last = time.time() + timeout, None
        while True:
            p = self.pool()
            if p and p["running"] == 0 and p["waiting"] == 0 and p == last or time.time() > deadline:
                return p
            last = p
            time.sleep(0.5)

    def settle(self, idle: dict | None, timeout: float = 60) -> dict | None:
        """Poll the pool until it is back to ``idle`` (or timeout); the last reading."""
        deadline = time.time() + timeout
        while True:
            p = self.pool()
            if pool_back(idle, p) or time.time() > deadline:
                return p
            time.sleep(0.5)

    def metric(self, name: str) -> float | None:
        try:
            status, raw = get(self.base, "/metrics", timeout=30)
        except OSError:
            return None
        return metric(raw.decode(errors="replace"), name) if status == 200 else None


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


def references(server: Server, specs: list[Spec], timeout: float) -> dict:
    """Each spec alone on the idle server (one request at a time): key -> record."""
    refs = {}
    for s in specs:
        r = generate(server.base, body(s), timeout)
        if r["status"] != "completed":
            raise RuntimeError(f"reference {s.key} did not complete: {r['status']} {r['error']} {r['out']}")
        refs[s.key] = record(r["out"])
    return refs


def _outcome(spec: Spec, intent: str, r: dict, refs: dict, stream: bool) -> dict:
    o = {"key": spec.key, "kind": spec.sampling + ("+logprob" if spec.logprob else ""), "intent": intent,
         "stream": stream, "status": r["status"], "latency_s": r["latency_s"],
         "chunks": r["chunks"], "http": r["http"], "error": r["error"], "compared": False, "identical": False}
    if r["status"] == "completed" and spec.key in refs:
        same, what, at = compare(refs[spec.key], record(r["out"]))
        o.update(compared=True, identical=same, differs=what, first_diff=at)
    elif r["status"] in ("cancelled", "aborted") and r["out"] and spec.key in refs and "output_ids" in r["out"]:
        same, what, at = compare(refs[spec.key], record(r["out"]), prefix=True)
        o.update(partial_tokens=len(r["out"]["output_ids"]), partial_identical=same)
    return o


def _send(server: Server, spec: Spec, intent: str, refs: dict, timeout: float, stream: bool = False,
          k: int = 0) -> dict:
    rid = f"stress-{spec.key}-{uuid.uuid4().hex[:12]}"
    on_cancel = None
    if intent == "abort":
        def on_cancel():
            post(server.base, "/abort_request", {"rid": rid}, timeout=30)
    r = generate(server.base, body(spec, rid=rid, stream=stream), timeout,
                 cancel_after=k if intent != "complete" else 0, on_cancel=on_cancel)
    o = _outcome(spec, intent, r, refs, stream)
    o["rid"] = rid
    return o


def _finish(name: str, server: Server, outcomes: list[dict], idle: dict | None, log_off: int, out_dir: str,
            extra: dict | None = None, settle_s: float = 60) -> dict:
    after = server.settle(idle, timeout=settle_s)
    healthy = server.healthy()
    after = server.settle(idle, timeout=settle_s)  # the health probe's own request is done as well
    ev = log_evidence(server.log_since(log_off))
    extra = dict(extra or {}, log=ev)
    with open(os.path.join(out_dir, f"outcomes-{name}.jsonl"), "w") as f:
        for o in outcomes:
            f.write(json.dumps(o) + "\n")
    return summarize(name, outcomes, healthy, idle, after, extra)


def run_bursts(server, specs, refs, a, out_dir):
    idle, off = server.idle_pool(), server.log_size()
    sched = burst_schedule(a.clients, len(specs), a.burst_window, a.seed + 1)
    t0 = time.perf_counter()

    def client(offset, j):
        time.sleep(max(0.0, t0 + offset - time.perf_counter()))
        return _send(server, specs[j], "complete", refs, a.request_timeout)

    with cf.ThreadPoolExecutor(max_workers=a.clients) as ex:
        outcomes = list(ex.map(lambda x: client(*x), sched))
    return _finish("bursts", server, outcomes, idle, off, out_dir,
                   {"clients": a.clients, "window_s": a.burst_window, "wall_s": time.perf_counter() - t0})


def run_aborts(server, specs, refs, a, out_dir):
    idle, off = server.idle_pool(), server.log_size()
    longest = sorted(range(len(specs)), key=lambda j: -specs[j].max_new_tokens)[:a.abort_keep]
    cancel_specs = make_specs(2 * a.abort_cancel, a.seed + 7, a.vocab, 16, 512, a.abort_new, a.abort_new, prefix="c")
    plan = abort_plan(longest, a.abort_cancel, a.abort_cancel, a.seed + 2)
    t0 = time.perf_counter()

    def one(entry):
        intent, j, stream, k = entry
        spec = specs[j] if intent == "keep" else cancel_specs[j]
        return _send(server, spec, "complete" if intent == "keep" else intent, refs, a.request_timeout, stream, k)

    with cf.ThreadPoolExecutor(max_workers=len(plan)) as ex:
        outcomes = list(ex.map(one, plan))
    extra = {"disconnected": sum(o["intent"] == "disconnect" and o["status"] == "cancelled" for o in outcomes),
             "aborted_by_endpoint": sum(o["intent"] == "abort" and o["status"] == "aborted" for o in outcomes),
             "cancel_finished_first": sum(o["intent"] != "complete" and o["status"] == "completed" for o in outcomes),
             "cancel_new_tokens": a.abort_new, "wall_s": time.perf_counter() - t0}
    return _finish("aborts", server, outcomes, idle, off, out_dir, extra)


def run_long(server, specs, refs, a, out_dir):
    idle, off = server.idle_pool(), server.log_size()
    sched = long_schedule(a.duration, a.rate, len(specs), a.seed + 3, a.long_cancel_frac)
    rng = random.Random(a.seed + 4)
    slots = threading.BoundedSemaphore(a.max_inflight)
    outcomes, lock = [], threading.Lock()
    t0 = time.perf_counter()

    def one(j, action, stream, k):
        try:
            o = _send(server, specs[j], action, refs, a.request_timeout, stream, k)
            with lock:
                outcomes.append(o)
        finally:
            slots.release()

    with cf.ThreadPoolExecutor(max_workers=a.max_inflight) as ex:
        for offset, j, action in sched:
            wait = t0 + offset - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if time.perf_counter() - t0 >= a.duration:
                break  # self-stopping: never issue past the duration, even when behind schedule
            if not slots.acquire(timeout=max(0.0, a.duration - (time.perf_counter() - t0))):
                break
            stream = action != "complete" or rng.random() < 0.25
            ex.submit(one, j, action, stream, rng.randint(2, 4) if action != "complete" else 0)
    load_s = time.perf_counter() - t0
    return _finish("long", server, outcomes, idle, off, out_dir,
                   {"duration_s": a.duration, "load_s": load_s, "rate": a.rate, "max_inflight": a.max_inflight,
                    "scheduled": len(sched), "wall_s": time.perf_counter() - t0})


def run_exhaustion(a, out_dir):
    """Its own server (small pool, eager admission), its own references (alone on it), then all at once."""
    specs = make_specs(a.exhaust_requests, a.seed + 5, a.vocab, a.exhaust_min_len, a.exhaust_max_len,
                       a.exhaust_min_new, a.exhaust_max_new, prefix="x")
    args = [*a.common_args, "--max-total-tokens", str(a.max_total_tokens),
            "--schedule-conservativeness", str(a.exhaust_conservativeness)]
    env = {"SGLANG_TEST_RETRACT": "1"} if a.test_retract else None
    with Server(a.model_path, args, os.path.join(out_dir, "server-exhaustion.log"), a.startup_timeout, env) as srv:
        t_ref = time.perf_counter()
        refs = references(srv, specs, a.request_timeout)
        ref_s = time.perf_counter() - t_ref
        idle, off = srv.idle_pool(), srv.log_size()
        m0 = srv.metric("sglang:num_retracted_requests_total")
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(max_workers=len(specs)) as ex:
            outcomes = list(ex.map(lambda s: _send(srv, s, "complete", refs, a.request_timeout), specs))
        wall = time.perf_counter() - t0
        m1 = srv.metric("sglang:num_retracted_requests_total")
        ev = log_evidence(srv.log_since(off))
        row = _finish("exhaustion", srv, outcomes, idle, off, out_dir,
                      {"max_total_tokens": a.max_total_tokens, "retract_events": ev["retract_events"],
                       "retracted_reqs": max(ev["retracted_reqs"], int(m1 - m0) if m0 is not None and m1 is not None
                                             else 0),
                       "retracted_log": ev["retracted_reqs"],
                       "retracted_metric": None if m0 is None or m1 is None else m1 - m0,
                       "forced_retract": bool(a.test_retract), "references_s": ref_s, "wall_s": wall})
    return row


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

SCENARIOS = ("exhaustion", "aborts", "bursts", "long")


def _vocab(model_path: str) -> int:
    try:
        with open(os.path.join(model_path, "config.json")) as f:
            return int(json.load(f)["vocab_size"])
    except (OSError, KeyError, ValueError):
        return 32000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-path", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--duration", type=float, default=600.0, help="long run: seconds of load (issue: >= 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=int, default=None, help="default: the model's vocab_size")
    p.add_argument("--prompts", type=int, default=256, help="pool of request specs (references)")
    p.add_argument("--min-len", type=int, default=1)
    p.add_argument("--max-len", type=int, default=3000)
    p.add_argument("--max-new", type=int, default=128, help="pool max_new_tokens uniform in [1, this]")
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--burst-window", type=float, default=2.0, help="bursts: arrivals uniform in [0, this) s")
    p.add_argument("--abort-keep", type=int, default=16, help="aborts: pool requests that must complete")
    p.add_argument("--abort-cancel", type=int, default=8, help="aborts: requests cancelled per way (2 ways)")
    p.add_argument("--abort-new", type=int, default=1024, help="aborts: max_new_tokens of the cancelled ones")
    p.add_argument("--rate", type=float, default=8.0, help="long: mean arrivals per second")
    p.add_argument("--max-inflight", type=int, default=64, help="long: most requests in flight")
    p.add_argument("--long-cancel-frac", type=float, default=0.05)
    p.add_argument("--max-total-tokens", type=int, default=4096, help="exhaustion: the small pool")
    p.add_argument("--exhaust-requests", type=int, default=32)
    p.add_argument("--exhaust-min-len", type=int, default=64)
    p.add_argument("--exhaust-max-len", type=int, default=512)
    p.add_argument("--exhaust-min-new", type=int, default=128)
    p.add_argument("--exhaust-max-new", type=int, default=384)
    p.add_argument("--exhaust-conservativeness", type=float, default=0.1,
                   help="exhaustion: --schedule-conservativeness (low: admit eagerly, retract later)")
    p.add_argument("--test-retract", action="store_true",
                   help="exhaustion: also force retractions (SGLANG_TEST_RETRACT=1, every 3rd decode step)")
    p.add_argument("--context-length", type=int, default=4096)
    p.add_argument("--mem-fraction-static", type=float, default=0.5)
    p.add_argument("--cuda-graph-max-bs-decode", type=int, default=64)
    p.add_argument("--server-args", default="", help="more launch_server flags, one string")
    p.add_argument("--startup-timeout", type=float, default=600)
    p.add_argument("--request-timeout", type=float, default=600)
    a = p.parse_args(argv)
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    bad = set(a.scenarios) - set(SCENARIOS)
    if bad:
        p.error(f"unknown scenarios {sorted(bad)}; known: {','.join(SCENARIOS)}")
    if a.exhaust_max_len + a.exhaust_max_new > a.max_total_tokens:
        p.error("an exhaustion request must fit the small pool alone (exhaust-max-len + exhaust-max-new)")
    if a.max_len + a.max_new > a.context_length or a.abort_new + 512 > a.context_length:
        p.error("prompts plus new tokens must fit --context-length")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.makedirs(a.out, exist_ok=True)
    a.vocab = a.vocab or _vocab(a.model_path)
    a.common_args = ["--context-length", str(a.context_length), "--mem-fraction-static", str(a.mem_fraction_static),
                     "--cuda-graph-max-bs-decode", str(a.cuda_graph_max_bs_decode), "--random-seed", "0",
                     *a.server_args.split()]
    if importlib.util.find_spec("prometheus_client") is not None:
        a.common_args.append("--enable-metrics")
    t_start = time.time()
    summary = {"model_path": a.model_path, "args": {k: v for k, v in vars(a).items()}, "rows": [],
               "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    rows = summary["rows"]

    def save():
        summary["total_s"] = time.time() - t_start
        summary["passed"] = bool(rows) and all(r["passed"] for r in rows) and len(rows) == len(a.scenarios)
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        with open(os.path.join(a.out, "summary.md"), "w") as f:
            f.write(markdown(rows))

    main_scen = [s for s in a.scenarios if s != "exhaustion"]
    if main_scen:
        specs = make_specs(a.prompts, a.seed, a.vocab, a.min_len, a.max_len, 1, a.max_new)
        with Server(a.model_path, a.common_args, os.path.join(a.out, "server-main.log"), a.startup_timeout) as srv:
            status, raw = get(srv.base, "/server_info")
            info = json.loads(raw) if status == 200 else {}
            summary["sglang_version"] = info.get("version")
            summary["max_total_num_tokens"] = info.get("max_total_num_tokens")
            t0 = time.perf_counter()
            refs = references(srv, specs, a.request_timeout)
            summary["references"] = {"n": len(refs), "s": time.perf_counter() - t0}
            print(f"references: {len(refs)} in {summary['references']['s']:.1f} s", flush=True)
            for name in main_scen:
                fn = {"aborts": run_aborts, "bursts": run_bursts, "long": run_long}[name]
                rows.append(fn(srv, specs, refs, a, a.out))
                print(json.dumps({k: rows[-1][k] for k in ("scenario", "served", "completed", "identical",
                                                           "compared", "pool_back", "passed")}), flush=True)
                save()
    if "exhaustion" in a.scenarios:
        rows.append(run_exhaustion(a, a.out))
        print(json.dumps({k: rows[-1][k] for k in ("scenario", "served", "completed", "identical", "compared",
                                                   "retracted_reqs", "pool_back", "passed")}), flush=True)
    rows.sort(key=lambda r: SCENARIOS.index(r["scenario"]))
    save()
    print(markdown(rows))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
