"""MCR-Bench against a live server, on the CPU: a real HTTP server in a thread that speaks SGLang's
native /generate and /server_info, and the OpenAI completions format as SGLang 0.5.17 and vLLM
answer it (a protocol fixture, no model). Checked: the requests' fields, the answers' parsing,
retries and timeouts, the mode check, and that the OpenAI path writes the same records as the
native one; and, through the command line, that an unreachable server is named, the partial
results kept and the run resumable."""

import http.server
import json
import os
import socket
import threading
import time

import pytest

from bench.mcr import metrics, report, results, runner, tasks
from bench.mcr.server import OpenAIClient, ServerClient, parse_openai
from tests.mcr import mcr_cli

BF16_INFO = {"quantization": None, "enable_deterministic_inference": False, "dtype": "bfloat16",
             "attention_backend": "triton", "tp_size": 1, "version": "0.5.17"}
HEAL_INFO = {**BF16_INFO, "quantization": "heal", "attention_backend": "heal", "dtype": "auto"}


def model(prompt: str, n: int) -> tuple[list[int], list[float], str]:
    """The fixture's "model": greedy output of ``n`` tokens, one per character, that depends on the prompt."""
    text = ("Answer: yes. " + prompt)[:n]
    return [ord(c) for c in text], [-0.01 * (i + 1) for i in range(len(text))], text


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, status: int, body, ctype="application/json"):
        data = (json.dumps(body) if ctype == "application/json" else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _down(self) -> bool:
        if self.server.down:
            self.close_connection = True  # drop it unanswered, as a dying server does
            return True
        return False

    def do_GET(self):  # noqa: N802 - http.server's name
        if self._down():
            return
        s = self.server
        if self.path in ("/server_info", "/get_server_info") and s.info is not None:
            self._send(200, s.info)
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": s.model_name, "object": "model"}]})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self):  # noqa: N802
        if self._down():
            return
        s = self.server
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        s.requests.append((self.path, body))
        if self.path == "/flush_cache" and s.info is not None:
            self._send(200, "Cache flushed.\n", ctype="text/plain")  # SGLang answers plain text
        elif self.path == "/generate" and s.info is not None:
            outs = []
            for p, sp in zip(body["text"], body["sampling_params"], strict=True):
                ids, lps, text = model(p, sp["max_new_tokens"])
                outs.append({"text": text, "output_ids": ids,
                             "meta_info": {"output_token_logprobs": [[lp, i, None] for lp, i in zip(lps, ids,
                                                                                                    strict=True)]}})
            self._send(200, outs)
        elif self.path == "/v1/completions":
            self._complete(body)
        else:
            self._send(404, {"detail": "Not Found"})

    def _complete(self, body):
        s = self.server
        s.completions += 1
        if s.completions <= s.fail_first:
            return self._send(503, {"error": {"message": "overloaded (test)"}})
        if s.delay:
            time.sleep(s.delay)
        if "return_token_ids" in body and s.token_ids == "refuse":
            return self._send(400, {"object": "error", "message": "Unknown field: return_token_ids", "code": 400})
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = []
        for i, p in enumerate(prompts):
            ids, lps, text = model(p, body["max_tokens"])
            c = {"index": i, "text": text, "finish_reason": "length", "matched_stop": None,
                 "logprobs": {"text_offset": [-1] * len(ids), "token_logprobs": lps, "tokens": list(text),
                              "top_logprobs": [{t: lp} for t, lp in zip(text, lps, strict=True)]}}
            if body.get("return_token_ids") and s.token_ids == "yes":
                c["token_ids"] = ids
            choices.append(c)
        choices.reverse()  # the order of choices is the index's, not the list's
        self._send(200, {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": body["model"],
                         "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                       "total_tokens": 2}})
        if s.down_after is not None and s.completions >= s.down_after:
            s.down = True
            threading.Thread(target=lambda: (s.shutdown(), s.server_close()), daemon=True).start()


class Fixture:
    """A server in a thread: ``info`` None is a non-SGLang server (no /server_info, no /generate);
    ``token_ids``: "yes" (returned), "ignore" (field ignored), "refuse" (HTTP 400)."""

    def __init__(self, info=BF16_INFO, token_ids="yes", port=0, **kw):
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.srv.daemon_threads = True
        s = self.srv
        s.info, s.token_ids, s.model_name, s.requests, s.completions, s.down = info, token_ids, "m-test", [], 0, False
        s.fail_first, s.delay, s.down_after = kw.get("fail_first", 0), kw.get("delay", 0), kw.get("down_after")
        self.url = f"http://127.0.0.1:{s.server_address[1]}"
        threading.Thread(target=s.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        if not self.srv.down:
            self.srv.shutdown()
            self.srv.server_close()


class _Ex:
    def __init__(self, i):
        self.task, self.id, self.prompt, self.gold = "t", str(i), f"q{i}", "yes"


class _Task:
    name, max_new_tokens = "t", 12

    def extract(self, text):
        return "yes" if "yes" in text else None

    def is_correct(self, answer, gold):
        return answer == gold


def test_openai_requests_are_greedy_seeded_with_logprobs_and_token_ids():
    with Fixture() as f:
        c = OpenAIClient(f.url, "bf16", retries=0, seed=7)
        assert c.model == "m-test" and c.sglang
        got = c.generate(["a", "bb", "c"], [5, 9, 5])
        assert got == [model("a", 5), model("bb", 9), model("c", 5)]  # in the prompts' order
        posts = [b for p, b in f.srv.requests if p == "/v1/completions"]
        assert sorted(len(b["prompt"]) for b in posts) == [1, 2]  # one request per max_tokens, sent together
        for b in posts:
            assert b["temperature"] == 0.0 and b["seed"] == 7 and b["logprobs"] == 1 and b["return_token_ids"]
            assert b["model"] == "m-test" and b["n"] == 1 and not b["stream"]
        c.flush()
        assert f.srv.requests[-1][0] == "/flush_cache"


def test_the_openai_path_writes_the_same_records_as_the_native_and_engine_paths(tmp_path):
    exs, ts = [_Ex(i) for i in range(4)], {"t": _Task()}
    variants = ["b1", "all", "radix-warm", "clients32"]
    with Fixture() as f:
        runner.run(exs, ts, ["bf16"], variants, str(tmp_path / "native"), server=f.url, meta={"model": f.url})
        runner.run(exs, ts, ["bf16"], variants, str(tmp_path / "openai"), server=f.url, meta={"model": f.url},
                   api="openai", server_opts={"retries": 0, "model": None, "seed": 0})
    native, openai = results.load(str(tmp_path / "native")), results.load(str(tmp_path / "openai"))
    assert len(openai) == 16 and openai == native
    assert openai[0]["output_ids"] == [ord(c) for c in "Answer: yes."] and openai[0]["answer"] == "yes"

    class _Engine:  # the in-process engine's outputs, through the engine path's parser
        device = "server"

        def flush(self):
            pass

        def generate(self, prompts, max_new):
            return [runner._parse({"text": t, "output_ids": i, "meta_info": {"output_token_logprobs": [
                [lp, x, None] for lp, x in zip(lps, i, strict=True)]}}) for i, lps, t in
                    (model(p, n) for p, n in zip(prompts, max_new, strict=True))]

    eng = str(tmp_path / "engine")
    meta = {"model": f.url, "heal_row_shards": os.environ.get("HEAL_ROW_SHARDS", "default")}
    runner.run_variant(_Engine(), "bf16", "all", exs, ts, eng, meta)
    assert results.load(eng) == [r for r in openai if r["variant"] == "all"]
    s = metrics.summarize(openai)["bf16"]
    assert s["identical"] == 1.0 and s["div_index"]["divergent"] == 0 and s["avg_std_at_output_length"] == 0.0


def test_a_server_without_token_ids_is_compared_on_token_texts(tmp_path, capsys):
    exs, ts = [_Ex(i) for i in range(3)], {"t": _Task()}
    out = str(tmp_path / "v")
    with Fixture(info=None, token_ids="ignore") as f:  # vLLM-like: no /server_info, no /flush_cache
        runner.run(exs, ts, ["bf16"], ["b1", "all"], out, server=f.url, api="openai",
                   server_opts={"retries": 0, "model": None})
    err = capsys.readouterr().err
    assert f"the server at {f.url} has no /server_info" in err and "cannot be checked that it serves mode bf16" in err
    assert err.count("offers no way to empty its prefix cache") == 1
    rows = results.load(out)
    assert all(r["tokens_as"] == "text" and r["output_ids"] == list(r["text"]) for r in rows)
    s = metrics.summarize(rows)["bf16"]
    assert s["identical"] == 1.0 and s["div_index"]["divergent"] == 0
    # a mode must not mix token ids with token texts
    ids = [{**r, "variant": "b1x", "output_ids": [ord(c) for c in r["text"]]} for r in rows if r["variant"] == "b1"]
    for r in ids:
        r.pop("tokens_as")
    with pytest.raises(ValueError, match="mode bf16 mixes records of token ids with records compared on the tokens"):
        metrics.summarize(rows + ids)
    # nor be measured against an FP32 run of token ids
    fp32 = [{**r, "mode": "fp32"} for r in ids]
    for r in fp32:
        r["variant"] = "all"
    assert "to_fp32" not in metrics.summarize(rows + fp32)["bf16"]
    report.render(rows + fp32, [])


def test_a_server_that_refuses_return_token_ids_is_asked_without_it(capsys):
    with Fixture(info=None, token_ids="refuse") as f:
        c = OpenAIClient(f.url, "bf16", retries=0)
        assert c.generate(["a"], [4]) == [(list("Answe"[:4]), model("a", 4)[1], "Answ")]
        assert c.generate(["b"], [4])[0][0] == list("Answ")
        bodies = [b for p, b in f.srv.requests if p == "/v1/completions"]
        assert [("return_token_ids" in b) for b in bodies] == [True, False, False]
    assert capsys.readouterr().err.count("refuses return_token_ids") == 1


def test_retries_are_bounded_and_timeouts_name_the_server():
    with Fixture(fail_first=2) as f:
        c = OpenAIClient(f.url, "bf16", retries=2, backoff=0.01)
        assert c.generate(["a"], [3]) == [model("a", 3)]  # two 503s, then an answer
        assert f.srv.completions == 3
    with Fixture(fail_first=5) as f:
        c = OpenAIClient(f.url, "bf16", retries=1, backoff=0.01)
        with pytest.raises(ConnectionError, match=rf"server at {f.url} is unreachable \(HTTP 503: overloaded "
                                                  r"\(test\); 2 attempts\)"):
            c.generate(["a"], [3])
        assert f.srv.completions == 2
    with Fixture(delay=1.0) as f:
        c = OpenAIClient(f.url, "bf16", retries=1, backoff=0.01, timeout=0.2)
        t0 = time.time()
        with pytest.raises(ConnectionError, match=rf"server at {f.url} is unreachable \(no answer to /v1/completions "
                                                  r"within 0.2 s; 2 attempts\)"):
            c.generate(["a"], [3])
        assert time.time() - t0 < 3


def test_answers_that_are_not_usable_name_the_cause():
    with pytest.raises(RuntimeError, match="for 2 prompt\\(s\\) with 1 choices"):
        parse_openai({"choices": [{"index": 0, "text": "", "logprobs": {"token_logprobs": [], "tokens": []}}]}, 2)
    with pytest.raises(RuntimeError, match="returned no logprobs"):
        parse_openai({"choices": [{"index": 0, "text": "x", "logprobs": None}]}, 1)
    with pytest.raises(RuntimeError, match="no choices"):
        parse_openai({"error": "boom"}, 1)


def test_a_mode_the_server_was_not_started_with_is_refused_naming_both():
    with Fixture(info=BF16_INFO) as f:
        for cls in (ServerClient, OpenAIClient):
            with pytest.raises(ValueError, match=rf"the server at {f.url} was not started for mode heal: it serves "
                                                 r"quantization=None, attention_backend=triton, dtype=bfloat16, "
                                                 r"enable_deterministic_inference=False, tp_size=1; mode heal needs "
                                                 r"quantization=heal, attention_backend=heal"):
                cls(f.url, "heal", retries=0)
    with Fixture(info=HEAL_INFO) as f:
        assert OpenAIClient(f.url, "heal", retries=0).sglang
        with pytest.raises(ValueError, match="mode det needs quantization=None, enable_deterministic_inference=True"):
            OpenAIClient(f.url, "det", retries=0)
    with Fixture(info=None) as f:
        with pytest.raises(ValueError, match="not an SGLang server.*use --api openai"):
            ServerClient(f.url, "bf16", retries=0)


def test_a_server_that_goes_away_mid_run_keeps_the_results_and_the_run_resumes(tmp_path):
    exs, ts, out = [_Ex(i) for i in range(5)], {"t": _Task()}, str(tmp_path / "r")
    with Fixture(down_after=3) as f:
        url, port = f.url, f.srv.server_address[1]
        with pytest.raises(ConnectionError, match=f"the server at {url} is unreachable"):
            runner.run(exs, ts, ["bf16"], ["b1"], out, server=url, api="openai",
                       server_opts={"retries": 1, "backoff": 0.01, "timeout": 5})
    assert results.done(out, "bf16", "b1") == {("t", "0"), ("t", "1"), ("t", "2")}
    with Fixture(port=port) as g:  # back, at the same address
        runner.run(exs, ts, ["bf16"], ["b1"], out, server=url, api="openai", server_opts={"retries": 0})
        assert g.srv.completions == 2  # only the missing examples
    assert len(results.load(out)) == 5


def test_command_line_against_an_openai_server(tmp_path):
    out = str(tmp_path / "run")
    n = len(tasks.get("finance_fx").examples(2, 0))
    with Fixture() as f:
        args = ["run", "--server", f.url, "--api", "openai", "--tasks", "finance_fx", "--n", "2", "--variants",
                "b1,all", "--retries", "1", "--out", out]
        r = mcr_cli(*args, "--modes", "heal")
        assert r.returncode == 2, r.stderr
        assert f"the server at {f.url} was not started for mode heal: it serves quantization=None" in r.stderr
        assert f"results so far are kept in {out}" in r.stderr
        r = mcr_cli(*args, "--modes", "bf16", "--request-seed", "3")
        assert r.returncode == 0, r.stderr
        assert {b["seed"] for p, b in f.srv.requests if p == "/v1/completions"} == {3}
    assert len(results.load(out)) == 2 * n and os.path.exists(os.path.join(out, "report.md"))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = mcr_cli("run", "--server", dead, "--api", "openai", "--tasks", "finance_fx", "--n", "2", "--modes", "bf16",
             "--variants", "b1", "--retries", "1", "--out", str(tmp_path / "dead"))
    assert r.returncode == 2
    assert f"the server at {dead} is unreachable" in r.stderr and "2 attempts" in r.stderr
    assert "run the same command again to continue" in r.stderr


def test_requests_and_answers_match_sglangs_own_openai_protocol():
    """The fixture's format checked against SGLang's own pydantic models of /v1/completions."""
    proto = pytest.importorskip("sglang.srt.entrypoints.openai.protocol")
    with Fixture() as f:
        c = OpenAIClient(f.url, "bf16", retries=0)
        c.generate(["a", "b"], [3, 3])
        body = next(b for p, b in f.srv.requests if p == "/v1/completions")
    req = proto.CompletionRequest.model_validate(body)
    assert req.return_token_ids and req.seed == 0 and req.temperature == 0.0 and req.logprobs == 1
    ids, lps, text = model("a", 3)
    choice = proto.CompletionResponseChoice(index=0, text=text, finish_reason="length", token_ids=ids,
                                            logprobs=proto.LogProbs(token_logprobs=lps, tokens=list(text),
                                                                    text_offset=[-1] * 3))
    resp = proto.CompletionResponse(id="x", model="m", choices=[choice],
                                    usage=proto.UsageInfo(prompt_tokens=1, completion_tokens=3, total_tokens=4))
    assert parse_openai(json.loads(resp.model_dump_json()), 1) == [(ids, lps, text)]
