"""MCR-Bench metrics on hand-made result sets with known answers; result files (resume, merge);
the report and plots; the command line's errors. No GPU, no SGLang engine."""

import http.server
import json
import math
import os
import socket
import threading

import pytest

from bench.mcr import metrics, report, results
from tests.mcr import mcr_cli


def rec(mode, variant, ex, ids, answer, correct, logprobs=None, task="t", device="GPU-A"):
    return {"mode": mode, "variant": variant, "task": task, "id": str(ex), "gold": "yes", "answer": answer,
            "correct": correct, "output_ids": ids, "logprobs": logprobs if logprobs is not None else [-0.5] * len(ids),
            "text": "", "model": "m", "device": device}


def hand_made():
    """Two modes, three examples, two variants each, plus FP32's reference.

    mode "stable": identical everywhere, accuracy 2/3 in both variants.
    mode "drift": example 0 identical; example 1 diverges at token 2 with the same answer;
    example 2 diverges at token 0, is 2 tokens shorter in one variant and flips its answer
    (correct in `all`, wrong in `b1`): accuracy 2/3 vs 1/3.
    """
    out = []
    for v in ("all", "b1"):
        out += [rec("stable", v, 0, [1, 2, 3], "yes", True), rec("stable", v, 1, [4, 5, 6], "no", False),
                rec("stable", v, 2, [7, 8, 9], "yes", True)]
    out += [rec("drift", "all", 0, [1, 2, 3], "yes", True), rec("drift", "b1", 0, [1, 2, 3], "yes", True),
            rec("drift", "all", 1, [4, 5, 6, 7], "no", False), rec("drift", "b1", 1, [4, 5, 9, 9], "no", False),
            rec("drift", "all", 2, [7, 8, 9, 10], "yes", True), rec("drift", "b1", 2, [3, 8], "no", False)]
    # the reference: FP32 at batch = all; drift's `all` shares 3 tokens of example 1 with it, logprobs off by 0.25
    out += [rec("fp32", "all", 0, [1, 2, 3], "yes", True), rec("fp32", "all", 1, [4, 5, 6, 1], "no", False,
                                                               logprobs=[-0.25] * 4),
            rec("fp32", "all", 2, [7, 8, 9, 10], "yes", True)]
    return out


def test_metrics_on_a_hand_made_set():
    s = metrics.summarize(hand_made())
    st, dr = s["stable"], s["drift"]
    assert st["identical"] == 1.0 and st["identical_logprobs"] == 1.0 and st["flip_rate"] == 0.0
    assert st["std_at_acc"] == 0.0 and st["acc_spread"] == 0.0 and st["avg_std_at_output_length"] == 0.0
    assert st["div_index"] == {"divergent": 0, "median": None, "values": []}
    assert dr["examples"] == 3 and dr["identical"] == pytest.approx(1 / 3) and dr["flip_rate"] == pytest.approx(1 / 3)
    assert dr["accuracy"] == {"all": pytest.approx(2 / 3), "b1": pytest.approx(1 / 3)}
    assert dr["std_at_acc"] == pytest.approx(math.sqrt(2) / 6)  # sample std of (2/3, 1/3)
    assert dr["acc_spread"] == pytest.approx(1 / 3)
    # output lengths: (3, 3), (4, 4), (4, 2): sample stds 0, 0, sqrt(2); averaged over 3 examples
    assert dr["avg_std_at_output_length"] == pytest.approx(math.sqrt(2) / 3)
    assert dr["div_index"] == {"divergent": 2, "median": 1.0, "values": [0, 2]}
    to = dr["to_fp32"]
    # example 0 identical (prefix 3, dlogprob 0); 1: prefix 3, |(-0.5) - (-0.25)| on 3 tokens; 2: identical (4)
    assert to["identical"] == pytest.approx(2 / 3) and to["mean_common_prefix"] == pytest.approx(10 / 3)
    assert to["mean_abs_dlogprob"] == pytest.approx(0.75 / 10)
    # stable's `all` stops one token before FP32 on examples 1 and 2
    assert st["to_fp32"]["identical"] == pytest.approx(1 / 3) and st["to_fp32"]["mean_common_prefix"] == 3.0
    assert s["fp32"]["to_fp32"]["identical"] == 1.0


def test_identical_tokens_with_different_logprobs_count_apart():
    rs = [rec("m", "a", 0, [1, 2], "yes", True, [-1.0, -2.0]), rec("m", "b", 0, [1, 2], "yes", True, [-1.0, -2.5])]
    m = metrics.mode_metrics(metrics.by_mode(rs)["m"])
    assert m["identical"] == 1.0 and m["identical_logprobs"] == 0.0


def test_first_divergence_and_common_prefix():
    assert metrics.first_divergence([[1, 2], [1, 2], [1, 2]]) is None
    assert metrics.first_divergence([[1, 2, 3], [1, 2], [1, 2, 3]]) == 2  # a shorter output differs at its end
    assert metrics.first_divergence([[5], [6]]) == 0
    assert metrics.common_prefix([1, 2, 3], [1, 9]) == 1


def test_results_resume_after_an_interrupted_append(tmp_path):
    out = str(tmp_path)
    results.append(out, [rec("heal", "b1", 0, [1], "yes", True), rec("heal", "b1", 1, [2], "no", False)])
    path = results.run_file(out, "heal", "b1")
    with open(path, "a") as f:
        f.write('{"mode": "heal", "variant": "b1", "task": "t", "id": "2", "outp')  # cut off mid-record
    assert results.done(out, "heal", "b1") == {("t", "0"), ("t", "1")}  # example 2 is redone
    assert len(results.load(out)) == 2
    with open(path, "w") as f:
        f.write('{"broken\n' + json.dumps(rec("heal", "b1", 0, [1], "yes", True)) + "\n")
    with pytest.raises(ValueError, match=r"heal__b1.jsonl:1: not a JSON record"):
        results.load(out)
    with pytest.raises(ValueError, match="holds no MCR-Bench results"):
        results.load(str(tmp_path / "nothing"))


def test_whole_variants_are_written_atomically(tmp_path):
    out = str(tmp_path)
    results.write_whole(out, "bf16", "all", [rec("bf16", "all", i, [i], "yes", True) for i in range(3)])
    assert sorted(os.listdir(os.path.join(out, "runs"))) == ["bf16__all.jsonl"]
    assert results.done(out, "bf16", "all") == {("t", "0"), ("t", "1"), ("t", "2")}


def test_merge_turns_devices_into_variants(tmp_path):
    a, b, m = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "m")
    results.write_whole(a, "heal", "all", [rec("heal", "all", i, [i], "yes", True, device="NVIDIA H100") for i in
                                           range(2)])
    results.write_whole(a, "heal", "b1", [rec("heal", "b1", i, [i], "yes", True, device="NVIDIA H100") for i in
                                          range(2)])
    results.write_whole(b, "heal", "all", [rec("heal", "all", i, [i + (i == 1)], "yes", True, device="NVIDIA H200")
                                           for i in range(2)])
    assert results.merge([a, b], m) == 6
    variants = sorted({r["variant"] for r in results.load(m)})
    assert variants == ["all@nvidia-h100", "all@nvidia-h200", "b1"]
    s = metrics.summarize(results.load(m))["heal"]
    assert s["identical"] == 0.5 and s["div_index"]["values"] == [0]
    with pytest.raises(ValueError, match="twice"):
        results.merge([a, a], str(tmp_path / "m2"))


def test_report_renders_and_plots(tmp_path):
    recs = hand_made()
    recs[0]["synthetic"] = True
    paths = report.write(recs, str(tmp_path / "rep"))
    md = open(paths[0]).read()
    assert "MCR-Bench (the mission-critical reproducibility benchmark of the HEAL paper, arXiv 2606.21023)" in md
    assert "accuracy\nmeans nothing" in md
    drift = next(line for line in md.splitlines() if line.startswith("| drift |"))
    assert "| 33.3% |" in drift and "| 1.0 (2) |" in drift and "| 66.7% | 3.3 | 0.075 |" in drift
    assert json.load(open(paths[1]))["stable"]["identical"] == 1.0
    for p in paths[2:]:
        assert open(p, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(paths) == 5  # md, json, identity, Div_Index CDF, distance to FP32


class _Info(http.server.BaseHTTPRequestHandler):
    """Answers /server_info as a BF16 SGLang server's does (the fields the check reads)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"quantization": None, "enable_deterministic_inference": False, "dtype": "auto",
                           "attention_backend": "triton"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_server_checks_name_the_cause(tmp_path):
    from bench.mcr.runner import ServerClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"server at http://127.0.0.1:{port} is unreachable .*; 3 attempts"):
        ServerClient(f"http://127.0.0.1:{port}", "heal", retries=2, backoff=0.01)
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Info)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        with pytest.raises(ValueError, match="was not started for mode heal: it serves quantization=None, "
                           "attention_backend=triton, dtype=auto, enable_deterministic_inference=False; "
                           "mode heal needs quantization=heal, attention_backend=heal"):
            ServerClient(url, "heal")
        assert ServerClient(url, "bf16").device == "server"
    finally:
        srv.shutdown()


class _Echo:
    """Stands in for an engine, which cannot run without a GPU: the runner's own bookkeeping
    (resume, whole variants, the warm pass, concurrent sends) is what is tested here. Outputs
    are the prompt's characters as ids, one answer per prompt; ``fail_after`` interrupts a run."""

    device = "test-device"

    def __init__(self, fail_after=None):
        self.calls, self.flushes, self.fail_after = [], 0, fail_after

    def flush(self):
        self.flushes += 1

    def generate(self, prompts, max_new):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise ConnectionError("the SGLang server at http://x is unreachable (test)")
        self.calls.append(list(prompts))
        return [([ord(c) for c in p[:n]], [-0.1] * min(n, len(p)), "Answer: yes") for p, n in zip(prompts, max_new,
                                                                                                   strict=True)]

    def generate_concurrent(self, prompts, max_new, clients, seed):
        return self.generate(prompts, max_new)


class _Task:
    name, max_new_tokens = "t", 4

    def extract(self, text):
        return "yes" if text and "yes" in text else None

    def is_correct(self, answer, gold):
        return answer is not None and answer == gold


class _Ex:
    def __init__(self, i):
        self.task, self.id, self.prompt, self.gold = "t", str(i), f"p{i}xyz", "yes"


def test_runner_resumes_one_at_a_time_variants_and_redoes_whole_ones(tmp_path):
    from bench.mcr import runner

    out, exs, tasks = str(tmp_path), [_Ex(i) for i in range(5)], {"t": _Task()}
    with pytest.raises(ConnectionError):
        runner.run_variant(_Echo(fail_after=3), "heal", "b1", exs, tasks, out, {"model": "m"})
    assert len(results.done(out, "heal", "b1")) == 3  # what completed before the failure is kept
    c = _Echo()
    assert runner.run_variant(c, "heal", "b1", exs, tasks, out, {}) == 2  # continues with the last two
    assert c.calls == [["p3xyz"], ["p4xyz"]] and c.flushes == 2
    assert runner.run_variant(c, "heal", "b1", exs, tasks, out, {}) == 0
    w = _Echo()
    assert runner.run_variant(w, "heal", "radix-warm", exs, tasks, out, {}) == 5
    assert len(w.calls) == 2 and w.calls[0] == w.calls[1]  # a warm-up pass, then the recorded one
    # a whole variant missing an example (a task grew) is redone whole: batch composition matters
    assert runner.run_variant(_Echo(), "heal", "radix-warm", exs + [_Ex(5)], tasks, out, {}) == 6
    rows = results.load(out)
    assert {r["variant"] for r in rows} == {"b1", "radix-warm"} and all(r["correct"] for r in rows)
    assert rows[0]["output_ids"] == [ord(c) for c in "p0xy"] and rows[0]["device"] == "test-device"


def test_unknown_variants_and_modes_and_server_limits_are_refused():
    from bench.mcr import runner

    with pytest.raises(ValueError, match="unknown variant.*b7.*known: b1, all"):
        runner.check_variants(["b7"], ["heal"], False)
    with pytest.raises(ValueError, match="unknown mode.*int4"):
        runner.check_variants(["b1"], ["int4"], False)
    with pytest.raises(ValueError, match="chunk64, tp2 change the server's flags"):
        runner.check_variants(["b1", "chunk64", "tp2"], ["heal"], True)


def test_command_line_errors_name_the_cause_and_keep_results(tmp_path):
    out = str(tmp_path / "run")
    results.write_whole(out, "heal", "all", [rec("heal", "all", 0, [1], "yes", True)])
    r = mcr_cli("run", "--model-path", "/nonexistent", "--tasks", "medicine,crypto", "--out", out)
    assert r.returncode == 2
    assert "unknown task or domain 'crypto'" in r.stderr and f"results so far are kept in {out}" in r.stderr
    bad = tmp_path / "u.jsonl"
    bad.write_text('{"id": 1, "q": "x", "answer": "yes"}\n{bad json\n')
    spec = tmp_path / "u.json"
    spec.write_text(json.dumps({"name": "mine", "path": str(bad), "template": "Q: {q}\nAnswer:",
                                "choices": ["yes", "no"]}))
    r = mcr_cli("run", "--model-path", "/x", "--user-task", str(spec), "--tasks", "mine", "--out", out)
    assert r.returncode == 2 and f"{bad}:2: invalid JSON" in r.stderr
    r = mcr_cli("run", "--model-path", "/x", "--variants", "b1,b7", "--out", out)
    assert r.returncode == 2 and "unknown variant(s) b7" in r.stderr
    assert results.done(out, "heal", "all") == {("t", "0")}  # nothing was lost
    r = mcr_cli("report", out)
    assert r.returncode == 0 and "| heal | 1 | all |" in r.stdout


def test_synthetic_checkpoints_get_a_bpe_tokenizer_trained_on_the_prompts(tmp_path):
    from transformers import AutoTokenizer

    from bench.e2e.models import bpe_tokenizer
    from bench.mcr import tasks

    corpus = [e.prompt for e in tasks.get("pubmedqa").examples(40)]
    bos, eos = bpe_tokenizer(corpus, 600, str(tmp_path))
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    ids = tok(corpus[0])["input_ids"]
    assert (bos, eos) == (tok.bos_token_id, tok.eos_token_id) and len(set(ids)) > 50
    assert tok.unk_token_id not in ids and tok.decode(ids) == corpus[0]
