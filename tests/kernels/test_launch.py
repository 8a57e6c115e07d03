"""The fast launch path (heal_kernels._launch): it must make exactly Triton's launches, and be easy to refuse."""

import os
import subprocess
import sys

import pytest
import torch
import triton

from heal_kernels import _launch
from tests.conftest import ON_GPU

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fast_launch_mode_is_refused_by_name_and_off_under_the_interpreter():
    with pytest.raises(ValueError, match="HEAL_FAST_LAUNCH"):
        _launch.set_fast_launch("yes")
    try:
        _launch.set_fast_launch("verify")
        # The interpreter has no compiled kernels: every launch goes through Triton whatever was asked.
        assert _launch.fast_launch_mode() == ("verify" if ON_GPU else "0")
    finally:
        _launch.set_fast_launch(os.environ.get("HEAL_FAST_LAUNCH", "0"))


@pytest.mark.skipif(ON_GPU, reason="the CPU check replaces Triton's driver; on a GPU the gpu test below runs")
@pytest.mark.skipif(not triton.__version__.startswith(_launch.FAST_LAUNCH_TRITON),
                    reason=f"the fast path is off on Triton {triton.__version__}: every launch is Triton's own")
def test_fast_path_makes_tritons_launches_with_the_gpu_taken_out():
    """Kernels compiled for sm_90 (Triton's bundled ptxas), Triton's driver replaced by one that records each
    launch instead of making it (bench.kernels.host_dispatch): for every launcher of a decode layer at batch
    1, 16 and 64 (the Gluon matmul and its TMA descriptors included), the fast path in verify mode launches
    the same compiled binary with the same metadata, grid, stream and arguments as Triton's own dispatch,
    without going through it; a callable grid, a launch hook (registered, or None assigned in place of the
    chain) and a changed kernel global are handled as Triton handles them.  Its own process: the
    interpreter must be off there."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "bench.kernels.host_dispatch", "--check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checked = [line for line in proc.stdout.splitlines() if "launch(es)" in line]
    assert len(checked) == 33 and all(line.endswith(" same") for line in checked), proc.stdout
    edges = [line for line in proc.stdout.splitlines() if line.startswith("edge:")]
    assert len(edges) == 4 and all(line.endswith(" ok") for line in edges), proc.stdout


@pytest.mark.gpu
def test_fast_path_gives_tritons_bits_on_the_gpu():
    """Each decode-layer launcher at batch 1, 16 and 64 (eager: split-x, in-program shards; Gluon), fast path in verify
    mode against Triton's dispatch: identical outputs into NaN-poisoned buffers, and verify found Triton's
    own kernel for every fast launch."""
    from heal_kernels import (
        apply_rotary,
        attention_decode,
        heal_matmul,
        new_int16_kv,
        prepare_weight,
        rms_norm,
        silu_and_mul,
        store_kv,
    )

    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(5)
    h, inter, hq, hk, d = 4096, 14336, 32, 8, 128
    w = prepare_weight((torch.randn(512, h, generator=gen) * 0.02).bfloat16().to(dev))
    norm_w = torch.rand(h, generator=gen).to(dev) + 0.5
    cos_sin = torch.randn(8192, d, generator=gen).to(dev)

    def layer(m):
        g = torch.Generator().manual_seed(m)
        x = torch.randn(m, h, generator=g).to(dev)
        res = torch.randn(m, h, generator=g).to(dev)
        gu = torch.randn(m, 2 * inter, generator=g).to(dev)
        q = torch.randn(m, hq * d, generator=g).to(dev)
        k = torch.randn(m, hk * d, generator=g).to(dev)
        v = torch.randn(m, hk, d, generator=g).to(dev)
        pos = torch.arange(100, 100 + m, device=dev)
        cache = new_int16_kv(128 * m, hk, d, dev)
        store_kv(cache, torch.arange(100 * m, device=dev), torch.randn(100 * m, hk, d, generator=g).to(dev),
                 torch.randn(100 * m, hk, d, generator=g).to(dev))
        outs = [heal_matmul(x, w), heal_matmul(x, w, k_shards=2), *rms_norm(x, norm_w, 1e-5, res), silu_and_mul(gu)]
        q2, k2 = apply_rotary(pos, q, k, cos_sin, d)
        loc = torch.arange(100 * m, 101 * m, device=dev)
        store_kv(cache, loc, k2.view(m, hk, d), v, validate=False)
        kv_indptr = torch.arange(0, 101 * m + 1, 101, device=dev, dtype=torch.int32)
        kv_indices = torch.cat([torch.cat([torch.arange(100 * i, 100 * i + 100), torch.tensor([100 * m + i])])
                                for i in range(m)]).to(dev, torch.int32)
        o = torch.full((m, hq, d), float("nan"), device=dev)
        res_out = torch.full((m, h), float("nan"), device=dev)
        attention_decode(q2.view(m, hq, d), cache, kv_indptr, kv_indices, sm_scale=0.088, out=o)
        outs.append(rms_norm(x, norm_w, 1e-5, res, residual_out=res_out)[1])
        return [*outs, q2, k2, cache.k, cache.v, cache.k_scale, cache.v_scale, o]

    try:
        for m in (1, 16, 64):  # 64: the Gluon matmul (TMA descriptors)
            _launch.set_fast_launch("0")
            theirs = layer(m)
            _launch.set_fast_launch("verify")
            layer(m)  # the first launch of each key goes through Triton
            ours = layer(m)
            for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
                assert torch.equal(a, b), f"batch {m}, output {i} differs"
    finally:
        _launch.set_fast_launch(os.environ.get("HEAL_FAST_LAUNCH", "0"))
