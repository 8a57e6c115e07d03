"""Quantization methods heal / layercast on real SGLang layers (CPU, Triton interpreter)."""

import pytest
import torch

K, N, VOCAB = 128, 96, 100


def _ref(x, w, bias=None):
    y = x.double() @ w.double().T
    return y if bias is None else y + bias.double()


def _load(layer, w):
    layer.weight.weight_loader(layer.weight, w)
    layer.quant_method.process_weights_after_loading(layer)


@pytest.fixture
def heal(tp_group, plugin, heal_mode):
    heal_mode.set_mode(heal_mode.HEAL, torch.bfloat16)
    from heal_sglang.quant import HealConfig

    return HealConfig()


def test_linear_keeps_one_16bit_copy_and_is_near_fp32(heal):
    from sglang.srt.layers.linear import RowParallelLinear

    torch.manual_seed(0)
    layer = RowParallelLinear(K, N, bias=True, quant_config=heal, params_dtype=torch.float32)
    assert layer.weight.dtype == torch.bfloat16  # the checkpoint's 16 bits, not params_dtype
    w = (torch.randn(N, K) * 0.02).to(torch.bfloat16)
    storage = layer.weight.data.untyped_storage().data_ptr()
    _load(layer, w)
    assert layer.weight.dtype == torch.float16 and layer.weight.untyped_storage().data_ptr() == storage
    bias = torch.randn(N)
    layer.bias.data.copy_(bias)
    x = torch.randn(7, K)
    y, _ = layer(x)
    assert y.dtype == torch.float32
    ref = _ref(x, w, bias)
    fp32 = (x @ w.float().T + bias).double()
    assert (y.double() - ref).abs().max() <= 4 * (fp32 - ref).abs().max() + 1e-12


def test_linear_rows_do_not_depend_on_the_batch(heal):
    from sglang.srt.layers.linear import QKVParallelLinear

    torch.manual_seed(1)
    layer = QKVParallelLinear(K, 32, 2, 1, bias=False, quant_config=heal, params_dtype=torch.float32)
    w = (torch.randn(layer.weight.shape) * 0.02).to(torch.bfloat16)
    for shard, rows in (("q", slice(0, 64)), ("k", slice(64, 96)), ("v", slice(96, 128))):
        layer.weight_loader(layer.weight, w[rows], shard)
    layer.quant_method.process_weights_after_loading(layer)
    x = torch.randn(9, K)
    full, _ = layer(x)
    for i in (0, 4, 8):
        one, _ = layer(x[i:i + 1])
        assert torch.equal(one[0], full[i])


def test_embedding_is_exact_and_tied_lm_head_uses_heal_matmul(heal):
    from sglang.srt.layers.vocab_parallel_embedding import VocabParallelEmbedding

    from heal_sglang.quant import HealEmbeddingMethod

    torch.manual_seed(2)
    emb = VocabParallelEmbedding(VOCAB, K, quant_config=heal, params_dtype=torch.float32)
    assert isinstance(emb.quant_method, HealEmbeddingMethod)
    w = (torch.randn(VOCAB, K) * 0.02).to(torch.bfloat16)
    _load(emb, w)
    ids = torch.tensor([0, 5, 99, 5])
    assert torch.equal(emb(ids), w[ids].float())  # bf16 value, exactly, as FP32
    # a tied lm_head is this module: LogitsProcessor calls quant_method.apply
    x = torch.randn(3, K)
    logits = emb.quant_method.apply(emb, x)[:, :VOCAB]
    ref = _ref(x, w)
    assert (logits.double() - ref).abs().max() <= 4 * ((x @ w.float().T).double() - ref).abs().max() + 1e-12


def test_lm_head(heal):
    from sglang.srt.layers.logits_processor import should_apply_lm_head_quant_method
    from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead

    torch.manual_seed(3)
    head = ParallelLMHead(VOCAB, K, quant_config=heal, params_dtype=torch.float32)
    w = (torch.randn(VOCAB, K) * 0.02).to(torch.bfloat16)
    _load(head, w)
    assert should_apply_lm_head_quant_method(head, head.quant_method)
    x = torch.randn(4, K)
    logits = head.quant_method.apply(head, x)
    assert logits.dtype == torch.float32
    assert torch.equal(logits[:, VOCAB:], torch.zeros_like(logits[:, VOCAB:]))  # padded vocab rows
    assert (logits[:, :VOCAB].double() - _ref(x, w)).abs().max() < 1e-6


def test_16bit_activations_are_refused(heal):
    from sglang.srt.layers.linear import ReplicatedLinear

    layer = ReplicatedLinear(K, N, bias=False, quant_config=heal, params_dtype=torch.float32)
    _load(layer, (torch.randn(N, K) * 0.02).to(torch.bfloat16))
    with pytest.raises(ValueError, match="FP32 activations"):
        layer(torch.randn(2, K, dtype=torch.bfloat16))


def test_layercast_upcasts_per_op(tp_group, plugin, heal_mode):
    heal_mode.set_mode(heal_mode.LAYERCAST, torch.bfloat16)
    from sglang.srt.layers.linear import ReplicatedLinear
    from sglang.srt.layers.vocab_parallel_embedding import VocabParallelEmbedding

    from heal_sglang.quant import LayerCastConfig

    layer = ReplicatedLinear(K, N, bias=False, quant_config=LayerCastConfig(), params_dtype=torch.float32)
    w = (torch.randn(N, K) * 0.02).to(torch.bfloat16)
    _load(layer, w)
    assert layer.weight.dtype == torch.bfloat16  # stored 16-bit, upcast in apply
    x = torch.randn(3, K)
    assert torch.equal(layer(x)[0], x @ w.float().T)
    emb = VocabParallelEmbedding(VOCAB, K, quant_config=LayerCastConfig(), params_dtype=torch.float32)
    we = (torch.randn(VOCAB, K) * 0.02).to(torch.bfloat16)
    _load(emb, we)
    assert torch.equal(emb(torch.tensor([3, 7])), we[[3, 7]].float())


def test_moe_layers_are_refused(heal):
    class FusedMoE(torch.nn.Module):
        pass

    with pytest.raises(NotImplementedError, match="mixture-of-experts"):
        heal.get_quant_method(FusedMoE(), "model.layers.0.mlp.experts")
