"""The ``heal`` attention backend driven through SGLang's attention test kit on CPU.

The kit builds real ReqToTokenPool / MHATokenToKVPool / ForwardBatch objects and
a RadixAttention layer; the pool gets heal's INT16 quant method, as the plugin's
pool hook gives it in the server.  Kernels run under the Triton interpreter.
"""

import functools
import math
import unittest

import pytest
import torch

from heal_kernels.reference import dequantize, quantize

HEAD_DIM = 64


@pytest.fixture
def kit(plugin, monkeypatch):
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool
    from sglang.test.kits.attention_unittest.attention_methods import dense_attention as kit

    from heal_sglang.kv_cache import Int16KVCacheMethod

    monkeypatch.setattr(kit, "MHATokenToKVPool", functools.partial(MHATokenToKVPool, quant_method=Int16KVCacheMethod()))
    return kit


def _cases(kit):
    cases = list(kit.make_dense_input_config_cases("heal"))
    cases += [c for c in kit.make_dense_attention_config_cases("heal") if c.sliding_window_size is None]
    return cases


def _case_names():
    from sglang.test.kits.attention_unittest.attention_methods import dense_attention as kit

    return [c.name for c in _cases(kit)]


def _build(kit, case):
    return kit.build_dense_attention_fixture(unittest.TestCase(), case, head_dim=HEAD_DIM, hidden_size=128,
                                             dtype=torch.float32, device="cpu")


def _float64_reference(fx, layer):
    """Causal attention in float64 over the cache's own (dequantized) K/V and int16-rounded Q (as the kernel
    rounds it), so only the kernel's arithmetic is tested."""
    case = fx.case
    pool = fx.runner.token_to_kv_pool
    k = dequantize(pool.k_buffer[0], pool.k_scale_buffer[0])
    v = dequantize(pool.v_buffer[0], pool.v_scale_buffer[0])
    q, _, _ = fx.actual_module.project_qkv(fx.input_hidden)
    q = dequantize(*quantize(q.view(-1, case.num_heads, HEAD_DIM)))
    group = case.num_heads // case.num_kv_heads
    rows, t = [], 0
    for b, (seq, n_new) in enumerate(zip(case.seq_lens, case.input_lens, strict=True)):
        slots = fx.runner.req_to_token_pool.req_to_token[b, :seq].long()
        kb = k[slots].repeat_interleave(group, dim=1)  # [seq, Hq, D]
        vb = v[slots].repeat_interleave(group, dim=1)
        for i in range(n_new):
            pos = seq - n_new + i
            s = torch.einsum("hd,nhd->hn", q[t], kb[: pos + 1]) * layer.scaling
            rows.append(torch.einsum("hn,nhd->hd", torch.softmax(s, dim=-1), vb[: pos + 1]))
            t += 1
    return torch.stack(rows).reshape(t, -1)


@pytest.mark.parametrize("name", _case_names())
def test_backend_matches_references(kit, name):
    fx = _build(kit, next(c for c in _cases(kit) if c.name == name))
    layer = fx.actual_module.attn
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    with torch.no_grad(), forward_context(ForwardContext(attn_backend=fx.backend)):
        fx.backend.init_forward_metadata(fx.forward_batch)
        q, k, v = fx.actual_module.project_qkv(fx.input_hidden)
        attn = fx.backend.forward(q, k, v, layer, fx.forward_batch)
    assert attn.dtype == torch.float32
    ref = _float64_reference(fx, layer)
    err = ((attn.double() - ref).abs().max() / ref.abs().max()).item()
    assert err < 2 ** -20, f"{fx.case.name}: rel err {err}"
    # and the kit's own end-to-end check (projections, un-quantized reference)
    actual = kit.run_dense_fixture_eager(fx)
    torch.testing.assert_close(actual, kit.expected_dense_fixture_output(fx), atol=1e-3, rtol=1e-3)


def test_decode_graph_metadata_gives_the_eager_bits(kit):
    """The CUDA-graph path (fixed split count from the context length, graph kv buffer) equals eager decode."""
    case = next(c for c in _cases(kit) if c.forward_mode.is_decode() and c.num_kv_heads < c.num_heads)
    fx = _build(kit, case)
    layer, fb, be = fx.actual_module.attn, fx.forward_batch, fx.backend
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    with torch.no_grad(), forward_context(ForwardContext(attn_backend=be)):
        q, k, v = fx.actual_module.project_qkv(fx.input_hidden)
        be.init_forward_metadata(fb)
        eager = be.forward(q, k, v, layer, fb)
        be.init_cuda_graph_state(max_bs=fb.batch_size, max_num_tokens=fb.batch_size)
        be.init_forward_metadata_out_graph(fb, in_capture=True)
        be.init_forward_metadata_in_graph(fb)
        assert be.forward_metadata.max_len == be.max_context_len > max(case.seq_lens)
        graph = be.forward(q, k, v, layer, fb, save_kv_cache=False)
    assert torch.equal(eager, graph)
    assert be.get_cuda_graph_seq_len_fill_value() == 1


@pytest.mark.parametrize("decode", [False, True], ids=["extend", "decode"])
def test_eager_batches_check_their_indices_once_not_per_layer(kit, monkeypatch, decode):
    """The kernels' index and slot checks cost host syncs: the backend runs them once per batch in
    init_forward_metadata and every layer's store and launch then skips them (same bits)."""
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    from heal_kernels import attention, kv_int16
    from heal_sglang import ops

    case = next(c for c in _cases(kit) if c.forward_mode.is_decode() == decode)
    fx = _build(kit, case)
    layer, fb, be = fx.actual_module.attn, fx.forward_batch, fx.backend
    calls = {"batch": 0, "slots": 0}

    def counted(key, fn):
        def wrapper(*a, **k):
            calls[key] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(attention, "_check_batch", counted("batch", attention._check_batch))
    monkeypatch.setattr(kv_int16, "check_slots", counted("slots", kv_int16.check_slots))
    with torch.no_grad(), forward_context(ForwardContext(attn_backend=be)):
        q, k, v = fx.actual_module.project_qkv(fx.input_hidden)
        be.init_forward_metadata(fb)
        assert calls == {"batch": 1, "slots": 0}
        # every layer's rotary skips its own check of these positions
        assert fb.positions is not None and ops._CheckedPositions.positions is fb.positions
        first = be.forward(q, k, v, layer, fb)
        again = be.forward(q, k, v, layer, fb)  # a second layer over the same batch
        assert calls == {"batch": 1, "slots": 0}
        # the graph path checks nothing itself and leaves eager stores to check their slots again
        be.init_cuda_graph_state(max_bs=fb.batch_size, max_num_tokens=fb.input_ids.shape[0])
        if decode:
            be.init_forward_metadata_out_graph(fb)
            assert be.pool.quant_method.validated_loc is None
            assert ops._CheckedPositions.positions is None
    assert torch.equal(first, again)


def test_pool_is_int16_and_accounts_scale_bytes(kit):
    fx = _build(kit, _cases(kit)[0])
    pool = fx.runner.token_to_kv_pool
    assert pool.k_buffer[0].dtype == torch.int16 and pool.k_scale_buffer[0].dtype == torch.float32
    h = fx.case.num_kv_heads
    assert pool.quant_method.compute_cell_size(h, HEAD_DIM, 3, 2) == 3 * 2 * h * (2 * HEAD_DIM + 4)


def test_backend_refuses_a_bf16_pool(plugin):
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool
    from sglang.test.kits.attention_unittest.attention_methods import dense_attention as kit

    case = kit.make_dense_input_config_cases("heal")[0]
    with pytest.raises(RuntimeError, match="needs heal's INT16 KV pool"):
        kit.build_dense_attention_fixture(unittest.TestCase(), case, head_dim=HEAD_DIM, dtype=torch.float32,
                                          device="cpu")
    assert MHATokenToKVPool is kit.MHATokenToKVPool


def test_scales_are_rows_max_over_qmax(kit):
    fx = _build(kit, _cases(kit)[0])
    pool = fx.runner.token_to_kv_pool
    used = pool.k_scale_buffer[0] != 1
    assert used.any()
    assert math.isclose(pool.k_buffer[0][used.any(dim=1)].abs().max().item(), 32639, rel_tol=0)


def test_decode_hands_o_proj_its_split_in_heal_mode(kit, heal_mode):
    """With heal's linears, decode's merge writes the split of its output for o_proj (the bits
    split_tiles gives, output unchanged); in another mode nothing is recorded."""
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    from heal_kernels.matmul import split_tiles
    from heal_sglang import ops

    case = next(c for c in _cases(kit) if c.forward_mode.is_decode())
    fx = _build(kit, case)
    layer, fb, be = fx.actual_module.attn, fx.forward_batch, fx.backend
    outs = {}
    for mode in (heal_mode.LAYERCAST, heal_mode.HEAL):
        heal_mode.set_mode(mode, torch.bfloat16)
        ops.forget_presplit()
        with torch.no_grad(), forward_context(ForwardContext(attn_backend=be)):
            q, k, v = fx.actual_module.project_qkv(fx.input_hidden)
            be.init_forward_metadata(fb)
            outs[mode] = be.forward(q, k, v, layer, fb)
        split = ops.take_presplit(outs[mode])
        if mode == heal_mode.HEAL:
            ref = split_tiles(outs[mode], 64)
            assert all(torch.equal(getattr(split, p), getattr(ref, p)) for p in ("hi", "lo", "ts"))
        else:
            assert split is None
    assert torch.equal(outs[heal_mode.LAYERCAST], outs[heal_mode.HEAL])
