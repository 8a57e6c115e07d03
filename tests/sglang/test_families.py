"""Model families as data: SGLang's own Llama, Qwen2, Qwen3 and Mistral models, built on CPU with heal's
quantization config, pass the post-load audit; an un-owned norm, an RMSNorm variant, a foreign
rotary class and an unknown architecture are refused."""

import pytest
import torch


@pytest.fixture(scope="module")
def sglang_models(plugin, tp_group):
    """Tiny SGLang models of each served family (2 layers), as ModelRunner would build them."""
    import transformers
    from sglang.srt.layers import dp_attention
    from sglang.srt.layers.rotary_embedding import base
    from sglang.srt.models.llama import LlamaForCausalLM
    from sglang.srt.models.mistral import MistralForCausalLM
    from sglang.srt.models.qwen2 import Qwen2ForCausalLM
    from sglang.srt.models.qwen3 import Qwen3ForCausalLM
    from sglang.srt.runtime_context import get_context

    from heal_sglang import compat
    from heal_sglang.quant import HealConfig

    get_context().override_server_args().install()
    # 0.5.17: a one-rank data-parallel-attention layout, which ModelRunner sets before building a model
    # (0.5.23 has no such globals: the layout comes from the runtime context the tp_group fixture published)
    dp_layout = {"_ATTN_DP_SIZE": 1, "_ATTN_DP_RANK": 0} if compat.installed() == compat.SGLANG_0517 else {}
    saved_cpu, saved_layout = base._is_cpu, {name: getattr(dp_attention, name) for name in dp_layout}
    base._is_cpu = True  # the rotary cache on CPU without vllm's kernel
    for name, value in dp_layout.items():
        setattr(dp_attention, name, value)
    small = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=512, max_position_embeddings=16384)
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}
    specs = [("LlamaForCausalLM", LlamaForCausalLM, transformers.LlamaConfig(**small, rope_scaling=llama3)),
             ("Qwen2ForCausalLM", Qwen2ForCausalLM, transformers.Qwen2Config(**small)),
             ("Qwen3ForCausalLM", Qwen3ForCausalLM, transformers.Qwen3Config(**small, head_dim=64)),
             ("MistralForCausalLM", MistralForCausalLM, transformers.MistralConfig(**small, sliding_window=None))]
    try:
        yield {arch: cls(cfg, quant_config=HealConfig()) for arch, cls, cfg in specs}
    finally:
        base._is_cpu = saved_cpu
        for name, value in saved_layout.items():
            setattr(dp_attention, name, value)


def _kinds(model):
    from heal_sglang import families

    return sorted({type(m).__name__ for _, m in model.named_modules() if families._kind(m)})


def test_served_families_pass_the_audit(sglang_models):
    from heal_sglang import families
    from heal_sglang.ops import PRESPLIT_ATTR
    from heal_sglang.plugin import check_heal_model

    for arch, model in sglang_models.items():
        assert families.audit(model, [arch]) == [], arch
        check_heal_model(model, [arch])
        # the norms whose output feeds a linear layer write its split (heal_sglang.ops); Qwen3's q/k norms not
        marked = sorted(name.rsplit(".", 1)[-1] for name, m in model.named_modules() if getattr(m, PRESPLIT_ATTR, 0))
        assert marked == ["input_layernorm"] * 2 + ["norm"] + ["post_attention_layernorm"] * 2, (arch, marked)
    assert _kinds(sglang_models["LlamaForCausalLM"]) == ["Llama3RotaryEmbedding", "RMSNorm", "SiluAndMul"]
    assert _kinds(sglang_models["Qwen3ForCausalLM"]) == ["RMSNorm", "RotaryEmbedding", "SiluAndMul"]
    assert _kinds(sglang_models["MistralForCausalLM"]) == ["RMSNorm", "RotaryEmbedding", "SiluAndMul"]


def test_an_unowned_norm_is_refused(sglang_models):
    from sglang.srt.layers.layernorm import GemmaRMSNorm

    from heal_sglang import families
    from heal_sglang.plugin import check_heal_model

    model = sglang_models["Qwen2ForCausalLM"]
    layer = model.model.layers[1]
    saved = layer.post_attention_layernorm
    layer.post_attention_layernorm = GemmaRMSNorm(128)
    try:
        bad = families.audit(model, ["Qwen2ForCausalLM"])
        assert bad == ["model.layers.1.post_attention_layernorm: GemmaRMSNorm is not one of this family's RMSNorm"]
        with pytest.raises(RuntimeError, match="would run on SGLang's 16-bit path: model.layers.1"):
            check_heal_model(model, ["Qwen2ForCausalLM"])
        layer.post_attention_layernorm = torch.nn.LayerNorm(128)
        assert families.audit(model, ["Qwen2ForCausalLM"]) == [
            "model.layers.1.post_attention_layernorm: LayerNorm is not one of this family's RMSNorm"]
    finally:
        layer.post_attention_layernorm = saved


def test_an_rmsnorm_variant_is_refused_not_computed_otherwise(sglang_models, heal_mode):
    from sglang.srt.layers.layernorm import RMSNorm

    from heal_sglang import families, ops

    model = sglang_models["LlamaForCausalLM"]
    layer = model.model.layers[0]
    saved = layer.input_layernorm
    layer.input_layernorm = RMSNorm(128, has_weight=False)
    try:
        assert families.audit(model, ["LlamaForCausalLM"]) == [
            "model.layers.0.input_layernorm: an RMSNorm variant (partial variance, cast before the weight, or no "
            "weight) heal's kernel does not compute"]
        x = torch.randn(2, 128)
        heal_mode.set_mode(heal_mode.HEAL)
        with pytest.raises(NotImplementedError, match="does not compute this variant"):
            ops.rmsnorm_forward_cuda(None, layer.input_layernorm, x)
        heal_mode.set_mode(heal_mode.FP32)  # the FP32 baseline's numerics are SGLang's FP32 torch path
        y = ops.rmsnorm_forward_cuda(None, layer.input_layernorm, x)
        assert torch.equal(y, layer.input_layernorm.forward_native(x))
    finally:
        layer.input_layernorm = saved


def test_a_foreign_rotary_class_is_refused(sglang_models):
    from sglang.srt.layers.rotary_embedding.mrope import MRotaryEmbedding

    from heal_sglang import families

    rope = MRotaryEmbedding.__new__(MRotaryEmbedding)  # its class is what the audit reads
    torch.nn.Module.__init__(rope)
    holder = torch.nn.Module()
    holder.rotary_emb = rope
    assert families.audit(holder, ["LlamaForCausalLM"]) == [
        "rotary_emb: MRotaryEmbedding is not one of this family's RotaryEmbedding, Llama3RotaryEmbedding, "
        "LinearScalingRotaryEmbedding, DynamicNTKScalingRotaryEmbedding, YaRNScalingRotaryEmbedding"]


def _refusals_of(config_cls, path, **kw):
    """heal's model refusals for a one-layer config of config_cls saved at path."""
    from sglang.srt.configs.model_config import ModelConfig

    from heal_sglang import args

    cfg = config_cls(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, vocab_size=512, **kw)
    cfg.architectures = [config_cls.__name__.replace("Config", "ForCausalLM")]
    cfg.save_pretrained(path)
    return args.model_refusals(ModelConfig(str(path)))


def test_an_unknown_architecture_is_refused_naming_the_families(plugin, tmp_path):
    import transformers

    from heal_sglang import families

    with pytest.raises(ValueError, match=r"does not serve Phi3ForCausalLM: served families are Llama \(3.x\)"):
        families.check_architecture(["Phi3ForCausalLM"])
    bad = _refusals_of(transformers.Phi3Config, tmp_path, max_position_embeddings=1024, sliding_window=None)
    assert bad and bad[0].startswith("architecture Phi3ForCausalLM (served families: Llama (3.x)")
    assert "Mistral (MistralForCausalLM)" in bad[0]


@pytest.mark.parametrize("window", [None, 4096])
def test_mistral_is_served_without_a_sliding_window_only(plugin, tmp_path, window):
    """SGLang's MistralForCausalLM is its Llama model, which would not apply a trained window:
    Mistral 7B v0.1's config (sliding_window 4096) is refused; v0.2+ (null) is served."""
    import transformers

    bad = _refusals_of(transformers.MistralConfig, tmp_path, max_position_embeddings=32768, sliding_window=window)
    assert bad == ([] if window is None else ["sliding-window attention (sliding_window=4096, MistralForCausalLM)"])
