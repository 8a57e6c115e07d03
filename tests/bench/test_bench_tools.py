"""`make bench`'s tools without a GPU: result parsing, the regression check, the report and
plots from stored fixtures, the end-to-end parametrization, and the refusal on a CPU machine.

fixtures/old.json and new.json are pytest-benchmark files of the end-to-end suite's shape:
between them HEAL's decode benchmark got slower by 0.35 s with a 0.01 s spread (a
regression) and its throughput benchmark moved by 0.07 s inside a 0.3 s spread (noise).
"""

import json
import os
import re
import subprocess
import sys

import pytest

from bench import compare, report, run
from bench.e2e.workloads import QUICK, WORKLOADS, Workload, fits, kv_bytes_per_token

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(os.path.dirname(__file__), "fixtures")
OLD, NEW = os.path.join(FIX, "old.json"), os.path.join(FIX, "new.json")
KERNELS = os.path.join(FIX, "kernels.json")


def test_result_files_parse_into_rows_with_their_spread():
    rows, data = report.load_rows(OLD)
    assert len(rows) == 6 and data["datetime"] == "2026-11-25T12:00:00"
    heal = next(r for r in rows if r["mode"] == "heal" and r["kind"] == "decode")
    assert heal["ms_per_token"] == 7.0 and heal["_iqr"] == 0.01


def test_compare_flags_the_regression_and_not_the_noise():
    reg, imp, same, gone, added = compare.compare(compare.load(OLD), compare.load(NEW))
    assert [c.name for c in reg] == ["bench/e2e/test_bench_e2e.py::test_e2e[llama-8b-default-heal-decode_b1_ctx128]"]
    assert reg[0].ratio == pytest.approx(1.40 / 1.05)
    assert imp == [] and gone == [] and added == []
    assert "bench/e2e/test_bench_e2e.py::test_e2e[llama-8b-default-heal-tput_64x128x128]" in [c.name for c in same]
    # the same run against itself: nothing moves
    reg2, imp2, *_ = compare.compare(compare.load(NEW), compare.load(NEW))
    assert reg2 == [] and imp2 == []


def test_compare_command_exits_nonzero_on_a_regression(capsys):
    assert compare.main([OLD, NEW]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "heal-decode_b1_ctx128" in out and "1 slower, 0 faster, 5 within the spread" in out
    assert compare.main([NEW, OLD]) == 0  # the reverse is an improvement, not a regression
    assert "improved" in capsys.readouterr().out


def test_noise_is_measured_from_the_runs():
    assert compare.noise({"rounds": 5, "iqr": 0.02, "min": 0.0, "max": 1.0}) == 0.02
    assert compare.noise({"rounds": 3, "iqr": 0.02, "min": 0.5, "max": 0.8}) == pytest.approx(0.3)


def test_overhead_reduction_is_the_papers_formula():
    assert report.overhead_reduction(12.0, 6.0, 7.0) == pytest.approx(6.0)
    assert report.overhead_reduction(12.0, 6.0, 5.0) == float("inf")


def test_report_renders_tables_and_plots_from_a_fixture(tmp_path):
    prefix = str(tmp_path / "run")
    report.main([OLD, "--out", prefix])
    md = open(prefix + ".md").read()
    assert "### End to end" in md
    # decode: (12 - 6) / (7 - 6) = 6.0x; throughput with 1/tok_s as the cost: 3.7x
    heal_rows = [line for line in md.splitlines() if "| heal |" in line]
    assert len(heal_rows) == 2
    assert "| 6.0x |" in heal_rows[0] and "| 1.17 |" in heal_rows[0]
    assert "| 3.7x |" in heal_rows[1] and "| 2.00 |" in heal_rows[1]
    for plot in ("-overhead.png", "-vs-fp32.png"):
        png = open(prefix + plot, "rb").read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, plot
    assert not os.path.exists(prefix + "-roofline.png")  # no kernel rows in this fixture


def test_report_renders_kernel_tables_and_the_roofline_from_a_fixture(tmp_path):
    """fixtures/kernels.json: six decode-attention benchmarks of a stored H100 run (heal, SGLang's BF16 kernel,
    torch FP32 at batch 1, 1k and 8k of context)."""
    prefix = str(tmp_path / "kern")
    report.main([KERNELS, "--out", prefix])
    md = open(prefix + ".md").read()
    assert "### Attention" in md and "measured ceilings: copy 3000 GB/s" in md
    png = open(prefix + "-roofline.png", "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not os.path.exists(prefix + "-overhead.png")  # no end-to-end rows


def test_fp32_reduction_plot_needs_both_baselines(tmp_path):
    rows, _ = report.load_rows(OLD)
    assert not report.plot_fp32_reduction([r for r in rows if r["mode"] != "fp32"], str(tmp_path / "x.png"))
    assert not os.path.exists(tmp_path / "x.png")


def test_results_path_names_gpu_and_date_and_never_overwrites(tmp_path):
    p = run.results_path("NVIDIA H100 80GB HBM3", "2026-11-25", root=str(tmp_path))
    assert p == str(tmp_path / "h100-80gb-hbm3-2026-11-25.json")
    open(p, "w").close()
    assert run.results_path("NVIDIA H100 80GB HBM3", "2026-11-25", root=str(tmp_path)).endswith("-2026-11-25-2.json")


def test_make_bench_refuses_without_a_gpu_in_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-m", "bench.run", "--set", "quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("make bench: no CUDA GPU here")
    assert not os.path.exists(os.path.join(ROOT, "bench", "results", "cpu.json"))


def _collect(*args, suite="bench/e2e/test_bench_e2e.py", only="::test_e2e["):
    r = subprocess.run([sys.executable, "-m", "pytest", suite, "--collect-only", "-q",
                        "-p", "no:cacheprovider", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return r.returncode, [line for line in r.stdout.splitlines() if only in line], r.stdout + r.stderr


def test_e2e_suite_parametrizes_models_modes_variants_and_workloads():
    rc, items, out = _collect("--e2e-set", "quick")
    assert rc == 0, out
    assert len(items) == len(QUICK["modes"]) * len(QUICK["workloads"])
    assert items[0].endswith("test_e2e[llama-8b-default-bf16-decode_b1_ctx128]")
    rc, items, out = _collect("--e2e-modes", "bf16,heal", "--e2e-variants", "default,ctx4096,eager",
                              "--e2e-workloads", "ttft_16384", "--model-path", "/models/llama")
    assert rc == 0, out
    assert len(items) == 6 and items[0].endswith("test_e2e[model-default-bf16-ttft_16384]")
    rc, _, out = _collect("--e2e-modes", "bf16,int4")
    assert rc != 0 and "--e2e-modes: unknown int4" in out


def test_e2e_shards_split_the_groups_and_keep_each_groups_modes_together():
    full = []
    for i in range(3):
        rc, items, out = _collect("--e2e-set", "quick", "--e2e-shard", f"{i}/3")
        assert rc == 0, out
        workloads = {it.rsplit("-", 1)[1].rstrip("]") for it in items}
        assert len(items) == len(QUICK["modes"]) * len(workloads)  # every mode of each of its workloads
        full += items
    assert sorted(full) == sorted(_collect("--e2e-set", "quick")[1])  # the parts add up to the whole, once
    kernels = [it for it in _collect("--e2e-set", "quick", "--e2e-shard", "0/2", suite="bench", only="::")[1]
               if "bench/kernels/" in it]
    assert kernels and not [it for it in _collect("--e2e-set", "quick", "--e2e-shard", "1/2", suite="bench",
                                                  only="::")[1] if "bench/kernels/" in it]
    for bad in ("3/3", "1", "a/b", "2/1"):
        rc, _, out = _collect("--e2e-set", "quick", "--e2e-shard", bad)
        assert rc != 0 and "--e2e-shard: expected I/N" in out, bad


def test_workloads_fit_the_context_and_count_kv_bytes(tmp_path):
    assert fits(WORKLOADS["ttft_16384"], 131072) and not fits(WORKLOADS["ttft_16384"], 4096)
    assert fits(Workload("decode", 1, 128, 129), None)
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 32, "num_attention_heads": 32, '
                                          '"num_key_value_heads": 8, "hidden_size": 4096}')
    assert kv_bytes_per_token(str(tmp_path), "bf16") == 32 * 2 * 8 * 128 * 2
    assert kv_bytes_per_token(str(tmp_path), "fp32") == 32 * 2 * 8 * 128 * 4
    assert kv_bytes_per_token(str(tmp_path), "heal") == 32 * 2 * 8 * (2 * 128 + 4)


def test_sass_mix_counts_the_attention_kernels_instructions():
    """bench.kernels.sass_mix compiles the attention kernel for sm_90 on this CPU machine (no GPU) and
    reports its loop's instruction mix: a decode block holds the int8 score MMAs and the FP16 P.V MMAs."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a real compile, not the interpreter
    res = subprocess.run([sys.executable, "-m", "bench.kernels.sass_mix"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    from bench.kernels import sass_mix

    assert [ln.split(":")[0] for ln in lines] == [label for label, _, _ in sass_mix.launches()]
    for ln in lines:
        largest, block = map(int, re.search(r"largest loop (\d+), block loop (\d+) \(MMA: ", ln).groups())
        mma = {op: int(c) for op, c in re.findall(r"([HI]G?MMA) (\d+)", ln.split("|")[0])}
        assert 0 < sum(mma.values()) < block <= largest, ln
        if ln.startswith("decode"):  # a decode block: exact int8 score MMAs and FP16 P.V MMAs
            assert mma.get("IMMA", 0) > 0 and mma.get("HMMA", 0) > 0, ln


_KILLED_RUN = '''
import os
import signal


def _bench(benchmark, mode, ttft_ms):
    benchmark.pedantic(sum, args=([1, 2, 3],), rounds=3, iterations=1)
    benchmark.extra_info.update({"op": "e2e", "model": "m", "variant": "default", "mode": mode,
                                 "workload": "ttft_4096", "kind": "ttft", "ttft_ms": ttft_ms,
                                 "seconds": ttft_ms / 1e3})


def test_bf16(benchmark):
    _bench(benchmark, "bf16", 5.0)


def test_heal(benchmark):
    _bench(benchmark, "heal", 11.0)


def test_failed(benchmark):
    _bench(benchmark, "layercast", 50.0)
    raise AssertionError("a failed test's benchmark is not journaled")


def test_the_time_limit():
    if os.environ.get("KILL_HERE") == "1":
        os.kill(os.getpid(), signal.SIGKILL)


def test_fp32_after_the_kill(benchmark):
    _bench(benchmark, "fp32", 20.0)
'''


def test_a_killed_run_keeps_its_finished_benchmarks(tmp_path):
    """pytest-benchmark writes its JSON at the session's end: a run killed before it (a GPU call's time
    limit) keeps, in the journal, every benchmark that passed before the kill."""
    from bench import journal

    (tmp_path / "test_killed_run.py").write_text(_KILLED_RUN)
    out, part = tmp_path / "gpu-day.json", tmp_path / "gpu-day.partial.jsonl"
    assert journal.journal_path(str(out)) == str(part)
    r = _journaled_run(tmp_path, out, part, kill=True)
    assert r.returncode == -9, r.stdout + r.stderr  # killed, as by a time limit
    assert not out.exists()
    data = journal.read(str(part))
    assert [b["extra_info"]["mode"] for b in data["benchmarks"]] == ["bf16", "heal"]
    assert data["benchmarks"][0]["stats"]["rounds"] == 3 and data["datetime"] != "?"
    # the report and the comparison read the journal like a result file
    text, rows = report.render([str(part)])
    heal = next(line for line in text.splitlines() if "| heal |" in line)
    assert "| 11 ttft_ms | 2.20 |" in heal
    assert set(compare.load(str(part))) == {b["fullname"] for b in data["benchmarks"]}
    # make bench's end of run: no JSON, so the report comes from the journal, which stays
    assert run.finish(str(out), str(part)) == str(part)
    assert "| 2.20 |" in (tmp_path / "gpu-day.md").read_text() and part.exists()
    # the same day's next run gets new names, never this journal's
    assert run.results_path("gpu", root=str(tmp_path), date="day") == str(tmp_path / "gpu-day-2.json")


def _journaled_run(tmp_path, out, part, kill, *extra):
    return subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_killed_run.py"), "-p", "bench.journal",
                           f"--bench-journal={part}", f"--benchmark-json={out}", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "-q", *extra], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KILL_HERE": "1" if kill else "0"})


def test_a_resumed_run_runs_only_what_the_journal_lacks_and_writes_the_whole_run(tmp_path):
    """A suite longer than one GPU call: killed once, then resumed (--bench-resume), it runs only the
    benchmarks the journal lacks, and make bench's end of run writes one JSON holding all of them."""
    from bench import journal

    (tmp_path / "test_killed_run.py").write_text(_KILLED_RUN)
    out, part = tmp_path / "gpu-day.json", tmp_path / "gpu-day.partial.jsonl"
    assert _journaled_run(tmp_path, out, part, kill=True).returncode == -9
    with open(part, "a") as f:
        f.write('{"fullname": "cut')  # the kill came mid-write: the resumed run drops the cut line
    assert run.resumed_out(str(part)) == str(out)
    r = _journaled_run(tmp_path, out, part, False, "--bench-resume")
    assert "2 deselected" in r.stdout and "1 failed" in r.stdout, r.stdout + r.stderr  # bf16 and heal did not rerun
    modes = [b["extra_info"]["mode"] for b in journal.read(str(part))["benchmarks"]]
    assert modes == ["bf16", "heal", "fp32"]  # fp32 from the last test; the failed test's is not kept
    assert run.finish(str(out), str(part)) == str(out) and not part.exists()
    with open(out) as f:
        merged = json.load(f)["benchmarks"]
    # the journal's two earlier benchmarks, and this run's (pytest-benchmark keeps a failed test's too)
    assert sorted(b["extra_info"]["mode"] for b in merged) == ["bf16", "fp32", "heal", "layercast"]
    assert "| 4.00 |" in (tmp_path / "gpu-day.md").read_text()  # fp32: 20 ms against bf16's 5, one report
    # a run cannot resume what ended, what is not a journal, or into another file
    for bad, msg in ((str(part), "no such journal"), (str(out), "expected a run's journal")):
        with pytest.raises(ValueError, match=msg):
            run.resumed_out(bad)
    part.write_text("")
    with pytest.raises(ValueError, match="exists, so that run ended"):
        run.resumed_out(str(part))
    with pytest.raises(ValueError, match="--out x.json names another file"):
        run.resumed_out(str(part), "x.json")
    r = _journaled_run(tmp_path, tmp_path / "b.json", tmp_path / "none.partial.jsonl", False, "--bench-resume")
    assert r.returncode != 0 and "--bench-resume: " in r.stderr and "holds no journal" in r.stderr


def test_journal_reads_a_cut_off_line_and_refuses_bad_ones(tmp_path):
    from bench import journal

    path = str(tmp_path / "j.partial.jsonl")
    journal.start(path)
    entry = {"fullname": "t::a", "stats": {"median": 1.0, "min": 1.0, "max": 1.0, "rounds": 3}, "extra_info": {}}
    journal.append(path, entry)
    with open(path, "a") as f:
        f.write('{"fullname": "t::b", "sta')  # the kill came mid-write
    assert [b["fullname"] for b in journal.read(path)["benchmarks"]] == ["t::a"]
    with open(path, "a") as f:
        f.write("\n")  # the cut-off line is now a whole line: a corrupt file, named with its line
    with pytest.raises(ValueError, match=r"j\.partial\.jsonl, line 3: not a JSON record"):
        journal.read(path)
    with pytest.raises(pytest.UsageError, match="--bench-journal: .* already holds"):
        journal.start(path)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(entry) + "\n")
    with pytest.raises(ValueError, match="not a bench journal"):
        journal.read(str(other))


def test_a_complete_run_reports_from_its_json_and_drops_the_journal(tmp_path):
    from bench import journal

    out = str(tmp_path / "run.json")
    part = journal.journal_path(out)
    with open(OLD) as f:
        (tmp_path / "run.json").write_text(f.read())
    journal.start(part)
    assert run.finish(out, part) == out
    assert not os.path.exists(part) and "### End to end" in (tmp_path / "run.md").read_text()
    # nothing finished and no JSON: no report
    assert run.finish(str(tmp_path / "none.json"), str(tmp_path / "none.partial.jsonl")) is None
