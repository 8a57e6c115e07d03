"""bench.e2e.stress on the CPU: schedules, the bitwise comparison, the report's maths and the pool
check on hand-made data, and the HTTP client's protocol handling against a stdlib http.server (a
test of the client only: nothing here stands in for SGLang)."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.e2e import stress

# --- specs and schedules -------------------------------------------------------------------------


def test_specs_are_seeded_bounded_and_mixed():
    a = stress.make_specs(256, seed=3, vocab=32000, min_len=1, max_len=3000, min_new=1, max_new=64)
    assert a == stress.make_specs(256, seed=3, vocab=32000, min_len=1, max_len=3000, min_new=1, max_new=64)
    assert a != stress.make_specs(256, seed=4, vocab=32000, min_len=1, max_len=3000, min_new=1, max_new=64)
    lens = [len(s.input_ids) for s in a]
    assert min(lens) == 1 and max(lens) == 3000 and all(1 <= n <= 3000 for n in lens)
    assert all(1 <= s.max_new_tokens <= 64 for s in a)
    assert all(10 <= t < 32000 - 10 for s in a for t in s.input_ids)
    kinds = [(s.sampling, s.logprob) for s in a]
    assert all(kinds.count(k) == 64 for k in stress.KINDS)  # the four kinds equally often
    assert len({s.key for s in a}) == 256
    seeded = [s for s in a if s.sampling == "seeded"]
    assert all(s.seed is not None for s in seeded) and len({s.seed for s in seeded}) == len(seeded)
    assert all(s.seed is None for s in a if s.sampling == "greedy")


@pytest.mark.parametrize("kw", [dict(min_len=0), dict(min_len=5, max_len=4), dict(min_new=0), dict(n=0)])
def test_specs_refuse_bad_ranges(kw):
    args = dict(n=4, seed=0, vocab=100, min_len=1, max_len=10, min_new=1, max_new=4) | kw
    with pytest.raises(ValueError):
        stress.make_specs(**args)


def test_request_bodies():
    g, s = stress.Spec("a", (11, 12), 5, "greedy", False), stress.Spec("b", (13,), 7, "seeded", True, seed=99)
    assert stress.body(g) == {"input_ids": [11, 12],
                              "sampling_params": {"max_new_tokens": 5, "ignore_eos": True, "temperature": 0.0}}
    b = stress.body(s, rid="r1", stream=True)
    assert b["sampling_params"] == {"max_new_tokens": 7, "ignore_eos": True, "temperature": 0.7, "top_p": 0.9,
                                    "sampling_seed": 99}
    assert b["return_logprob"] is True and b["top_logprobs_num"] == stress.TOP_LOGPROBS
    assert b["rid"] == "r1" and b["stream"] is True
    # the reference differs from the stressed request only in rid and stream
    assert {k: v for k, v in b.items() if k not in ("rid", "stream")} == stress.body(s)


def test_burst_schedule():
    sched = stress.burst_schedule(256, 256, 2.0, seed=1)
    assert sched == stress.burst_schedule(256, 256, 2.0, seed=1)
    assert len(sched) == 256 and sorted(j for _, j in sched) == list(range(256))  # every spec once
    times = [t for t, _ in sched]
    assert times == sorted(times) and all(0 <= t < 2.0 for t in times)
    assert len(set(times)) > 200  # random arrivals, not one instant
    more = stress.burst_schedule(10, 4, 1.0, seed=0)
    counts = [sum(j == i for _, j in more) for i in range(4)]
    assert sorted(counts) == [2, 2, 3, 3]  # cycled through every spec


def test_long_schedule_is_bounded_and_seeded():
    s = stress.long_schedule(120, 8.0, 256, seed=2, cancel_frac=0.1)
    assert s == stress.long_schedule(120, 8.0, 256, seed=2, cancel_frac=0.1)
    assert all(0 <= t < 120 for t, _, _ in s) and [t for t, _, _ in s] == sorted(t for t, _, _ in s)
    assert 800 < len(s) < 1120  # Poisson, about 960
    actions = [a for _, _, a in s]
    assert set(actions) == {"complete", "disconnect", "abort"}
    assert 0.05 < 1 - actions.count("complete") / len(actions) < 0.15
    assert all(0 <= j < 256 for _, j, _ in s)
    assert len(stress.long_schedule(1000, 100.0, 4, seed=0, max_requests=50)) == 50
    assert len(stress.long_schedule(10, 1000.0, 4, seed=0)) <= 2 * 1000 * 10 + 16
    with pytest.raises(ValueError):
        stress.long_schedule(10, 0, 4, seed=0)


def test_abort_plan():
    plan = stress.abort_plan([5, 9, 2, 7], n_disconnect=3, n_abort=2, seed=0)
    keeps = [p for p in plan if p[0] == "keep"]
    assert sorted(p[1] for p in keeps) == [2, 5, 7, 9] and sum(p[2] for p in keeps) == 2  # half streamed
    cancels = [p for p in plan if p[0] != "keep"]
    assert sorted(p[1] for p in cancels) == [0, 1, 2, 3, 4]  # distinct cancel specs
    assert [p[0] for p in cancels].count("disconnect") == 3 and all(p[2] and 2 <= p[3] <= 6 for p in cancels)


# --- bitwise comparison ---------------------------------------------------------------------------

OUT = {"output_ids": [7, 8, 9], "meta_info": {
    "finish_reason": {"type": "length", "length": 3},
    "output_token_logprobs": [[-0.5, 7, None], [-1.25, 8, None], [-3.0e-7, 9, None]],
    "output_top_logprobs": [[[-0.5, 7, None], [-2.0, 3, None]], [[-1.25, 8, None], [-1.5, 4, None]],
                            [[-3.0e-7, 9, None], [-16.0, 1, None]]]}}


def _copy(o):
    return json.loads(json.dumps(o))


def test_record():
    r = stress.record(OUT)
    assert r == {"ids": [7, 8, 9], "logprobs": [-0.5, -1.25, -3.0e-7], "logprob_ids": [7, 8, 9],
                 "top": [[[-0.5, 7], [-2.0, 3]], [[-1.25, 8], [-1.5, 4]], [[-3.0e-7, 9], [-16.0, 1]]]}
    assert stress.record({"output_ids": [1], "meta_info": {}}) == {"ids": [1]}


def test_identical_outputs_compare_equal_through_json():
    assert stress.compare(stress.record(OUT), stress.record(_copy(OUT))) == (True, None, None)


def test_one_ulp_in_a_logprob_fails():
    got = _copy(OUT)
    got["meta_info"]["output_token_logprobs"][2][0] = math.nextafter(-3.0e-7, 0.0)
    ok, what, at = stress.compare(stress.record(OUT), stress.record(got))
    assert (ok, what, at) == (False, "logprobs", 2)


def test_one_ulp_in_a_top_logprob_fails():
    got = _copy(OUT)
    got["meta_info"]["output_top_logprobs"][1][1][0] = math.nextafter(-1.5, -math.inf)
    assert stress.compare(stress.record(OUT), stress.record(got)) == (False, "top", 1)


def test_signed_zero_and_nan_compare_by_bits():
    assert not stress._same(0.0, -0.0)
    assert stress._same(float("nan"), float("nan"))
    assert not stress._same(1, 1.0)  # an id is not a logprob
    assert stress._same(None, None) and not stress._same(None, 0.0)


def test_token_and_length_differences_fail():
    ref = stress.record(OUT)
    got = _copy(OUT)
    got["output_ids"][1] = 5
    assert stress.compare(ref, stress.record(got)) == (False, "ids", 1)
    short = {"output_ids": [7, 8], "meta_info": {k: v[:2] if isinstance(v, list) else v
                                                 for k, v in OUT["meta_info"].items()}}
    assert stress.compare(ref, stress.record(short))[0] is False
    no_lp = {"output_ids": [7, 8, 9], "meta_info": {}}
    assert stress.compare(ref, stress.record(no_lp)) == (False, "logprobs present in only one", None)


def test_partial_outputs_compare_as_prefixes():
    ref = stress.record(OUT)
    part = {"output_ids": [7, 8], "meta_info": {k: v[:2] if isinstance(v, list) else v
                                                for k, v in OUT["meta_info"].items()}}
    assert stress.compare(ref, stress.record(part), prefix=True)[0] is True
    # a chunk naming one more id than logprobs is compared over what both cover
    part["output_ids"] = [7, 8, 9]
    assert stress.compare(ref, stress.record(part), prefix=True)[0] is True
    part["meta_info"]["output_token_logprobs"][1][0] = -1.2500000000000002
    assert stress.compare(ref, stress.record(part), prefix=True) == (False, "logprobs", 1)
    assert stress.compare(ref, stress.record(part))[0] is False  # not a full output


# --- report maths and the pool check --------------------------------------------------------------


def test_percentile_nearest_rank():
    v = list(range(1, 101))
    assert stress.percentile(v, 50) == 50 and stress.percentile(v, 99) == 99 and stress.percentile(v, 100) == 100
    assert stress.percentile([3.0], 99) == 3.0 and stress.percentile([], 50) is None
    assert stress.percentile([5, 1, 4, 2, 3], 50) == 3 and stress.percentile([5, 1, 4, 2, 3], 99) == 5
    with pytest.raises(ValueError):
        stress.percentile([1], 101)


IDLE = {"free": 1000, "total": 1000, "used": 0, "running": 0, "waiting": 0}


def test_pool_back():
    assert stress.pool_back(IDLE, dict(IDLE))
    assert not stress.pool_back(IDLE, dict(IDLE, free=999, used=1))  # a leaked slot
    assert not stress.pool_back(IDLE, dict(IDLE, running=1))
    assert not stress.pool_back(IDLE, dict(IDLE, waiting=2))
    assert not stress.pool_back(IDLE, None) and not stress.pool_back(None, IDLE)


def _o(status, intent="complete", lat=1.0, identical=True, compared=None, **kw):
    return dict(status=status, intent=intent, latency_s=lat, identical=identical,
                compared=status == "completed" if compared is None else compared, **kw)


def test_summary_row_and_pass_rules():
    outs = [_o("completed", lat=x / 10) for x in range(1, 11)] + [_o("cancelled", "disconnect"),
                                                                 _o("aborted", "abort")]
    row = stress.summarize("bursts", outs, True, IDLE, dict(IDLE))
    assert (row["served"], row["completed"], row["cancelled"], row["failed"]) == (12, 10, 2, 0)
    assert (row["identical"], row["compared"], row["p50_s"], row["p99_s"]) == (10, 10, 0.5, 1.0)
    assert row["passed"] and row["pool_back"]
    assert not stress.summarize("bursts", outs[:-1] + [_o("completed", identical=False)], True, IDLE, IDLE)["passed"]
    assert not stress.summarize("bursts", outs, False, IDLE, IDLE)["passed"]  # unhealthy
    assert not stress.summarize("bursts", outs, True, IDLE, dict(IDLE, free=990))["passed"]  # leak
    assert not stress.summarize("bursts", outs + [_o("error")], True, IDLE, IDLE)["passed"]  # a failed request
    assert not stress.summarize("bursts", [], True, IDLE, IDLE)["passed"]  # nothing served
    # a cancelled stream whose partial output is not a prefix of its reference fails the row
    bad = outs + [_o("cancelled", "disconnect", partial_identical=False)]
    assert stress.summarize("bursts", bad, True, IDLE, IDLE)["partial_compared"] == 1
    assert not stress.summarize("bursts", bad, True, IDLE, IDLE)["passed"]
    # a late cancel that completed without a reference is counted, not compared
    late = stress.summarize("bursts", outs + [_o("completed", "abort", compared=False)], True, IDLE, IDLE)
    assert late["uncomparable"] == 1 and late["passed"]


def test_exhaustion_and_aborts_need_their_evidence():
    outs = [_o("completed")]
    assert not stress.summarize("exhaustion", outs, True, IDLE, IDLE, {"retracted_reqs": 0})["passed"]
    assert stress.summarize("exhaustion", outs, True, IDLE, IDLE, {"retracted_reqs": 3})["passed"]
    assert not stress.summarize("aborts", outs, True, IDLE, IDLE,
                                {"disconnected": 2, "aborted_by_endpoint": 0})["passed"]
    assert stress.summarize("aborts", outs, True, IDLE, IDLE, {"disconnected": 2, "aborted_by_endpoint": 1})["passed"]


def test_markdown_table():
    row = stress.summarize("exhaustion", [_o("completed", lat=0.25)], True, IDLE, dict(IDLE),
                           {"retracted_reqs": 5, "retract_events": 2})
    md = stress.markdown([row])
    assert md.splitlines()[0].startswith("| scenario | served | completed |")
    assert "| exhaustion | 1 | 1 | 0 | 0 | 1/1 | 0.250 | 0.250 | yes | 1000/1000 | 1000/1000 |" in md
    assert "retracted 5 (2 events)" in md and md.rstrip().endswith("| yes |")


def test_log_evidence_and_metrics():
    log = ("[2026] WARNING scheduler.py: KV cache pool is full. Retract requests. #retracted_reqs: 3, "
           "#new_tokens_gained: 1200, #new_token_ratio: 0.7000 -> 0.2100\n"
           "INFO: Request is disconnected from the client side (type 3). Abort request obj.rid='x'\n"
           "KV cache pool is full. Retract requests. #retracted_reqs: 1, #new_tokens_gained: 300\n")
    assert stress.log_evidence(log) == {"retract_events": 2, "retracted_reqs": 4, "disconnect_lines": 1,
                                        "leak_lines": 0, "tracebacks": 0}
    text = ('# HELP sglang:num_retracted_requests_total Total number of retracted requests.\n'
            'sglang:num_retracted_requests_total{model_name="m",engine_type="unified"} 3.0\n'
            'sglang:num_retracted_requests_total_created{model_name="m"} 1.7e9\n'
            'sglang:num_retracted_requests_total{model_name="m",engine_type="other"} 2.0\n')
    assert stress.metric(text, "sglang:num_retracted_requests_total") == 5.0
    assert stress.metric(text, "sglang:nothing") is None


def test_cli_checks_sizes():
    ok = stress.parse_args(["--model-path", "m", "--out", "o", "--scenarios", "bursts,long", "--duration", "30"])
    assert ok.scenarios == ["bursts", "long"] and ok.duration == 30
    for bad in (["--scenarios", "bursts,nope"], ["--max-total-tokens", "256"], ["--max-len", "4000"]):
        with pytest.raises(SystemExit):
            stress.parse_args(["--model-path", "m", "--out", "o", *bad])


# --- the HTTP client against a stdlib server (protocol only) --------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    aborted = []
    chunks_sent = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/abort_request":
            type(self).aborted.append(req["rid"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        n = req["sampling_params"]["max_new_tokens"]
        if not req.get("stream"):
            data = json.dumps({"output_ids": list(range(n)), "meta_info": {"finish_reason": {"type": "length"}}})
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())
            return
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        try:
            for i in range(1, n + 1):
                last = i == n or req.get("rid") in type(self).aborted
                fr = {"type": "abort"} if req.get("rid") in type(self).aborted else \
                    {"type": "length"} if last else None
                self._chunk(b"data: " + json.dumps({"output_ids": list(range(i)),
                                                   "meta_info": {"finish_reason": fr}}).encode() + b"\n\n")
                sent += 1
                if last:
                    break
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        except OSError:
            pass
        type(self).chunks_sent.append(sent)

    def _chunk(self, b):
        self.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
        self.wfile.flush()


@pytest.fixture
def base():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Handler.aborted, _Handler.chunks_sent = [], []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_client_reads_json_and_event_streams(base):
    r = stress.generate(base, {"sampling_params": {"max_new_tokens": 4}}, timeout=10)
    assert r["status"] == "completed" and r["out"]["output_ids"] == [0, 1, 2, 3] and r["latency_s"] > 0
    r = stress.generate(base, {"sampling_params": {"max_new_tokens": 5}, "stream": True}, timeout=10)
    assert r["status"] == "completed" and r["chunks"] == 5 and r["out"]["output_ids"] == [0, 1, 2, 3, 4]


def test_client_disconnects_after_k_chunks(base):
    r = stress.generate(base, {"sampling_params": {"max_new_tokens": 2000}, "stream": True}, timeout=10,
                        cancel_after=3)
    assert r["status"] == "cancelled" and r["chunks"] == 3 and r["out"]["output_ids"] == [0, 1, 2]


def test_client_abort_callback_then_reads_to_the_end(base):
    body = {"sampling_params": {"max_new_tokens": 100000}, "stream": True, "rid": "r-7"}
    r = stress.generate(base, body, timeout=10, cancel_after=2,
                        on_cancel=lambda: stress.post(base, "/abort_request", {"rid": "r-7"}))
    assert _Handler.aborted == ["r-7"] and r["status"] == "aborted" and r["chunks"] >= 2


def test_client_reports_a_refused_connection():
    r = stress.generate(f"http://127.0.0.1:{stress.free_port()}", {"sampling_params": {}}, timeout=5)
    assert r["status"] == "error" and "ConnectionRefused" in r["error"]
