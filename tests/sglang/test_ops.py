"""FP32 op hooks: active only in heal / layercast / fp32 processes and only on FP32 inputs."""

import pytest
import torch

from heal_kernels import reference


def _orig(*a, **k):
    raise AssertionError("stock kernel called")


def test_hooks_pass_through_in_stock_mode(plugin, heal_mode):
    from sglang.srt.layers.layernorm import RMSNorm

    from heal_sglang import ops

    heal_mode.set_mode(None)
    norm = RMSNorm(64)
    sentinel = object()
    assert ops.rmsnorm_forward_cuda(lambda *a: sentinel, norm, torch.randn(2, 64)) is sentinel
    heal_mode.set_mode(heal_mode.HEAL)
    assert ops.rmsnorm_forward_cuda(lambda *a: sentinel, norm, torch.randn(2, 64, dtype=torch.bfloat16)) is sentinel


def test_rmsnorm_with_fp32_residual(plugin, heal_mode):
    from sglang.srt.layers.layernorm import RMSNorm

    from heal_sglang import ops

    heal_mode.set_mode(heal_mode.HEAL)
    torch.manual_seed(0)
    norm = RMSNorm(64, eps=1e-6)
    norm.weight.data = torch.randn(64)
    x, res = torch.randn(5, 64), torch.randn(5, 64)
    res_in = res.clone()
    out, res_out = ops.rmsnorm_forward_cuda(_orig, norm, x, res)
    h = x.double() + res_in.double()
    assert res_out is res and torch.equal(res_out, (x + res_in))
    ref = reference.rms_norm_ref(h, norm.weight, 1e-6)
    assert (out.double() - ref).abs().max() < 1e-5
    alone = ops.rmsnorm_forward_cuda(_orig, norm, x[:1].clone())
    assert alone.shape == (1, 64) and alone.dtype == torch.float32


def test_activation_and_rotary(plugin, heal_mode, monkeypatch):
    from sglang.srt.layers.activation import SiluAndMul
    from sglang.srt.layers.rotary_embedding import base
    from sglang.srt.runtime_context import get_context

    get_context().override_server_args().install()
    monkeypatch.setattr(base, "_is_cpu", True)  # else the CPU build wants vllm's fallback kernel

    from heal_sglang import ops

    heal_mode.set_mode(heal_mode.HEAL)
    x = torch.randn(3, 128)
    y = ops.silu_and_mul_forward_cuda(_orig, SiluAndMul(), x)
    ref = torch.nn.functional.silu(x[:, :64].double()) * x[:, 64:].double()
    assert (y.double() - ref).abs().max() < 1e-5
    rope = base.RotaryEmbedding(64, 64, 256, 10000, True, torch.float32)
    pos = torch.tensor([0, 7, 200])
    q, k = torch.randn(3, 4 * 64), torch.randn(3, 2 * 64)
    q2, k2 = ops.rotary_forward_cuda(_orig, rope, pos, q, k)
    qn, kn = rope.forward_native(pos, q.clone(), k.clone())
    assert (q2 - qn).abs().max() < 1e-5 and (k2 - kn).abs().max() < 1e-5
    with pytest.raises(NotImplementedError, match="offsets"):
        ops.rotary_forward_cuda(_orig, rope, pos, q, k, offsets=pos)


def test_rotary_checks_positions_once_per_batch(plugin, heal_mode, monkeypatch):
    """apply_rotary's range check of positions is a host sync; the heal backend checks the batch's positions
    once (note_checked_positions) and every layer's rotary skips it, with the same bits, as long as its
    cos/sin cache covers them.  Any other tensor, or a range the cache does not cover, is checked again."""
    from sglang.srt.layers.rotary_embedding import base
    from sglang.srt.runtime_context import get_context

    get_context().override_server_args().install()
    monkeypatch.setattr(base, "_is_cpu", True)

    from heal_kernels import rope as heal_rope
    from heal_sglang import ops

    heal_mode.set_mode(heal_mode.HEAL)
    checks = []
    real = heal_rope.check_index_range
    monkeypatch.setattr(heal_rope, "check_index_range", lambda *a, **k: (checks.append(a[0]), real(*a, **k)))
    rope = base.RotaryEmbedding(64, 64, 256, 10000, True, torch.float32)
    pos = torch.tensor([0, 7, 200])
    q, k = torch.randn(3, 4 * 64), torch.randn(3, 2 * 64)
    ops.note_checked_positions(None)
    want = ops.rotary_forward_cuda(_orig, rope, pos, q, k)
    assert checks == ["positions"]
    ops.note_checked_positions(pos)
    for _ in range(2):  # two layers of one batch
        got = ops.rotary_forward_cuda(_orig, rope, pos, q, k)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert checks == ["positions"]
    ops.rotary_forward_cuda(_orig, rope, pos.clone(), q, k)  # not the tensor that was checked
    assert checks == ["positions"] * 2
    far = torch.tensor([0, 7, 256])  # past the 256-entry cache: the layer's own check refuses it
    ops.note_checked_positions(far)
    with pytest.raises(ValueError, match="positions holds values in"):
        ops.rotary_forward_cuda(_orig, rope, far, q, k)
    ops.note_checked_positions(None)


def test_producers_hand_their_split_to_the_next_heal_linear(tp_group, plugin, heal_mode):
    """In heal mode the hidden-size RMSNorms (marked at load) and the gated activations write their
    output's heal_matmul split; the heal linear that receives exactly that tensor uses it (no split
    launch) with the same bits as without; a modified, different or other-mode tensor gets none."""
    from sglang.srt.layers.activation import SiluAndMul
    from sglang.srt.layers.layernorm import RMSNorm
    from sglang.srt.layers.linear import ReplicatedLinear

    from heal_kernels.matmul import split_tiles
    from heal_sglang import ops
    from heal_sglang.quant import HealConfig

    heal_mode.set_mode(heal_mode.HEAL, torch.bfloat16)
    torch.manual_seed(3)
    k, n = 128, 96
    norm = RMSNorm(k, eps=1e-6)
    norm.weight.data = torch.randn(k)
    setattr(norm, ops.PRESPLIT_ATTR, True)
    layer = ReplicatedLinear(k, n, bias=False, quant_config=HealConfig(), params_dtype=torch.float32)
    layer.weight.weight_loader(layer.weight, (torch.randn(n, k) * 0.02).to(torch.bfloat16))
    layer.quant_method.process_weights_after_loading(layer)
    x, res = torch.randn(5, k), torch.randn(5, k)

    ops.forget_presplit()
    h, _ = ops.rmsnorm_forward_cuda(_orig, norm, x.clone(), res.clone())
    split = ops._Presplit.split
    assert split is not None and torch.equal(split.hi, split_tiles(h, 64).hi)
    y, _ = layer(h)
    assert ops._Presplit.tensor is None, "the linear took the split"
    y_plain, _ = layer(h.clone())
    assert torch.equal(y, y_plain)

    h = ops.rmsnorm_forward_cuda(_orig, norm, x.clone())
    assert ops.take_presplit(h[:3]) is None and ops.take_presplit(h.t()) is None  # another view
    h.mul_(2)  # any write bumps the version
    assert ops.take_presplit(h) is None
    h = ops.rmsnorm_forward_cuda(_orig, norm, x.clone())
    assert ops.take_presplit(h.view(5, k)) is not None and ops.take_presplit(h) is None  # taken once

    g = ops.silu_and_mul_forward_cuda(_orig, SiluAndMul(), torch.randn(5, 2 * k))
    assert torch.equal(ops.take_presplit(g).ts, split_tiles(g, 64).ts)

    setattr(norm, ops.PRESPLIT_ATTR, False)  # per-head norms (Qwen3's q/k norms) are not marked
    ops.rmsnorm_forward_cuda(_orig, norm, x.clone())
    assert ops._Presplit.tensor is None
    heal_mode.set_mode(heal_mode.LAYERCAST, torch.bfloat16)
    setattr(norm, ops.PRESPLIT_ATTR, True)
    ops.silu_and_mul_forward_cuda(_orig, SiluAndMul(), torch.randn(5, 2 * k))
    ops.rmsnorm_forward_cuda(_orig, norm, x.clone())
    assert ops._Presplit.tensor is None, "only heal's matmuls read a split"
