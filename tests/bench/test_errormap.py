"""bench.errormap on CPU: the bit rounding, the map's maths, the forward's boundaries, the command."""

import json
import math
import os

import pytest
import torch

from bench.errormap import maps, model
from bench.errormap.__main__ import main, sweep_summary
from bench.errormap.bits import round_to_bits
from heal_kernels.reference import QMAX

# ---------------------------------------------------------------- round_to_bits

def _wide(n=20000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.exp(torch.randn(n, generator=g) * 20)
    return torch.cat([x.float(), torch.tensor([1e-40, -3e-42, 1e-45, 0.0, -0.0])])


def test_seven_bits_are_bf16_and_ten_bits_are_fp16_in_its_range():
    x = _wide()
    assert torch.equal(round_to_bits(x, 7), x.bfloat16().float())
    normal16 = (x.abs() >= 2.0**-14) & (x.abs() < 65504)
    assert torch.equal(round_to_bits(x, 10)[normal16], x[normal16].half().float())
    assert torch.equal(round_to_bits(x, 23), x)


def test_ties_go_to_even_and_overflow_goes_to_inf():
    one = torch.tensor([1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8)])
    assert round_to_bits(one, 7).tolist() == [1.0, 1 + 2.0**-6, -1.0]
    big = torch.tensor([3.4e38, -3.4e38, float("inf"), float("nan")])
    out = round_to_bits(big, 3)
    assert out[:3].tolist() == [math.inf, -math.inf, math.inf] and out[3].isnan()


@pytest.mark.parametrize("k", [-1, 24, 7.0, True])
def test_bits_outside_the_range_are_refused_naming_k(k):
    with pytest.raises(ValueError, match="k \\(significand bits\\)"):
        round_to_bits(torch.ones(2), k)


# ---------------------------------------------------------------- the map's maths

def test_stats_give_relative_errors_and_the_ratio_of_known_errors():
    s = maps.Stats()
    ref = torch.full((100,), 2.0, dtype=torch.float64)
    s.add("qkv_proj", 3, ref + 0.02, ref, ref + 0.01)  # carries 1e-2, makes 5e-3 of it
    row = s.table()["qkv_proj"][0]
    assert row["layer"] == 3 and row["n"] == 100
    assert row["rel_total"] == pytest.approx(0.01) and row["rel_own"] == pytest.approx(0.005)
    assert row["ratio"] == pytest.approx(0.25)
    s.add("embed", 0, ref, ref, None)
    assert s.table()["embed"][0]["rel_total"] == 0 and math.isnan(s.table()["embed"][0]["ratio"])


def test_attention_split_is_zero_for_values_the_int16_cache_holds_exactly():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randint(-QMAX, QMAX + 1, (5, 2, 64), generator=g).double() for _ in range(3))
    for x in (q, k, v):
        x[..., 0] = QMAX  # every row's scale is then 2^-20 exactly: its INT16 grid holds x
        x *= 2.0**-20
    s = maps.Stats()
    y = maps._attn(q, k, v, 0.125).reshape(5, -1)
    s.add_attention(0, {"q": q, "k": k, "v": v, "sm_scale": 0.125}, y)
    assert s.attention_split()[0] == {"q": 0.0, "k": 0.0, "v": 0.0, "arithmetic": 0.0}
    s2 = maps.Stats()
    s2.add_attention(0, {"q": q, "k": k, "v": v + 1e-7, "sm_scale": 0.125}, y)
    assert s2.attention_split()[0]["v"] > 0 and s2.attention_split()[0]["q"] == 0.0


def test_sweep_summary_counts_flips_and_common_prefixes():
    out = {"fp32": [[1, 2, 3], [4, 5, 6]], "bits:7": [[1, 2, 3], [4, 9, 6]], "heal": [[1, 2, 3], [4, 5, 6]]}
    s = sweep_summary(out)
    assert s["bits:7"] == {"n": 2, "identical": 1, "flip_rate": 0.5, "mean_common_prefix": 2.0}
    assert s["heal"]["flip_rate"] == 0.0 and "fp32" not in s


@pytest.mark.parametrize("mode", ["f64x", "bits:24", "bits:", "fp16"])
def test_unknown_modes_are_refused_naming_the_mode(mode):
    with pytest.raises(ValueError, match=f"unknown mode {mode!r}"):
        model.parse_mode(mode)


# ---------------------------------------------------------------- the forward on tiny checkpoints

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from bench.e2e import models

    root = tmp_path_factory.mktemp("models")
    return {n: models.make(n, str(root / n)) for n in ("llama-tiny", "qwen3-tiny")}


@pytest.mark.parametrize("name", ["llama-tiny", "qwen3-tiny"])
def test_every_float64_boundary_is_its_kernel_recomputed(tiny, name):
    ck = model.load(tiny[name])
    seen = []

    def record(kernel, layer, inputs, y):
        seen.append(kernel)
        want = maps.recompute64(kernel, inputs, ck.eps)
        if want is not None:
            torch.testing.assert_close(y, want.reshape(y.shape), rtol=1e-12, atol=1e-300)

    logits = model.forward(ck, model.Ops(ck, "f64", record), torch.arange(1, 12))
    assert logits.shape == (11, 512) and logits.dtype == torch.float64
    assert set(seen) == set(maps.KERNELS) - ({"qk_norm"} if name == "llama-tiny" else set())


def test_bf16_mode_is_seven_bits_at_every_boundary(tiny):
    ck = model.load(tiny["llama-tiny"])
    ids = torch.arange(3, 20)
    a = model.forward(ck, model.Ops(ck, "bf16"), ids)
    assert torch.equal(a, model.forward(ck, model.Ops(ck, "bits:7"), ids))
    assert torch.equal(a, a.bfloat16().float())  # every boundary, the logits included, is BF16


def test_map_command_writes_the_map_and_heal_error_comes_from_attention(tiny, tmp_path):
    out = tmp_path / "map"
    rc = main(["map", "--model-path", tiny["llama-tiny"], "--modes", "fp32,bf16,heal", "--prompts", "1",
               "--max-prompt-tokens", "16", "--out", str(out)])
    assert rc == 0
    names = sorted(os.listdir(out))
    assert names == ["map-bf16.png", "map-fp32.png", "map-heal.png", "map.json", "map.md"]
    res = json.loads((out / "map.json").read_text())
    last = {m: res["modes"][m]["logits"][0]["rel_total"] for m in ("fp32", "bf16", "heal")}
    assert last["fp32"] < last["heal"] < last["bf16"]
    heal = res["modes"]["heal"]
    # heal's GEMMs and norms add FP32-level error of their own; its INT16 attention adds the most
    worst_own = max(heal, key=lambda k: max(r["rel_own"] for r in heal[k]))
    assert worst_own == "attention"
    assert max(r["rel_own"] for r in heal["qkv_proj"]) < 1e-6
    split = res["attention_split"]["heal"]
    assert set(split) == {"0", "1"} and all(v >= 0 for s in split.values() for v in s.values())
    assert "## heal" in (out / "map.md").read_text()


def test_sweep_command_compares_each_mode_with_fp32(tiny, tmp_path):
    out = tmp_path / "sweep"
    rc = main(["sweep", "--model-path", tiny["llama-tiny"], "--bits", "7,23", "--modes", "bf16", "--prompts", "2",
               "--max-prompt-tokens", "8", "--new-tokens", "3", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "sweep.json").read_text())
    assert res["summary"]["bits:23"]["flip_rate"] == 0.0  # 23 bits is FP32 itself
    assert res["outputs"]["bits:7"] == res["outputs"]["bf16"]
    assert sorted(os.listdir(out)) == ["sweep.json", "sweep.md", "sweep.png"]


def test_bad_input_is_refused_naming_it(tiny, tmp_path, capsys):
    assert main(["map", "--model-path", tiny["llama-tiny"], "--modes", "f64", "--out", str(tmp_path)]) == 2
    assert "f64 is the reference" in capsys.readouterr().err
    assert main(["map", "--model-path", tiny["llama-tiny"], "--modes", "bits:99", "--out", str(tmp_path)]) == 2
    assert "unknown mode 'bits:99'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--model-path", tiny["llama-tiny"], "--new-tokens", "0", "--out", str(tmp_path)])
    assert "--new-tokens must be at least 1" in capsys.readouterr().err
    cfg = json.loads(open(os.path.join(tiny["llama-tiny"], "config.json")).read())
    bad = tmp_path / "gemma"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(dict(cfg, model_type="gemma2")))
    with pytest.raises(ValueError, match="model_type 'gemma2' is not one the error map knows"):
        model.load(str(bad))
