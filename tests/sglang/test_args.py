"""Server-argument rules, through SGLang's own ServerArgs resolution."""

import pytest


def _args(path, **kw):
    from tests.sglang._sglang import resolved_server_args

    return resolved_server_args(model_path=path, device="cuda", **kw)


@pytest.mark.parametrize("kw", [dict(attention_backend="heal", quantization="heal"), dict(quantization="heal"),
                                dict(attention_backend="heal")], ids=["both", "quantization", "attention_backend"])
def test_heal_resolves_to_fp32_activations_and_no_prefill_graphs(plugin, tiny_model, kw):
    sa = _args(tiny_model, **kw)
    assert (sa.dtype, sa.attention_backend, sa.quantization) == ("float32", "heal", "heal")
    assert sa.cuda_graph_config.prefill.backend == "disabled"
    assert sa.cuda_graph_config.decode.backend == "full"


def test_layercast_resolves_to_fp32(plugin, tiny_model):
    sa = _args(tiny_model, quantization="layercast", attention_backend="triton")
    assert (sa.dtype, sa.attention_backend) == ("float32", "triton")


def test_stock_arguments_are_untouched(plugin, tiny_model):
    sa = _args(tiny_model, attention_backend="triton")
    assert sa.dtype == "auto" and sa.quantization is None


@pytest.mark.parametrize("kw, needle", [
    (dict(attention_backend="heal", quantization="fp8"), "--attention-backend heal cannot be combined with "
                                                         "--quantization fp8"),
    (dict(attention_backend="heal", quantization="awq"), "--attention-backend heal cannot be combined with "
                                                         "--quantization awq"),
    (dict(attention_backend="heal", quantization="layercast"), "--attention-backend heal cannot be combined with "
                                                               "--quantization layercast"),
    (dict(decode_attention_backend="heal", quantization="fp8"), "--decode-attention-backend heal cannot be combined"),
    (dict(quantization="heal", attention_backend="triton"), "--quantization heal needs --attention-backend heal"),
    (dict(quantization="heal", decode_attention_backend="flashinfer"), "--decode-attention-backend heal"),
    (dict(quantization="heal", dtype="bfloat16"), "drop --dtype bfloat16"),
    (dict(quantization="layercast", dtype="float16"), "drop --dtype float16"),
    (dict(quantization="heal", cuda_graph_backend_prefill="tc_piecewise"), "--cuda-graph-backend-prefill"),
    (dict(quantization="heal", cuda_graph_backend_decode="breakable"), "--cuda-graph-backend-decode"),
    (dict(quantization="heal", speculative_algorithm="EAGLE"), "speculative decoding"),
    (dict(quantization="heal", enable_mixed_chunk=True), "--enable-mixed-chunk"),
    (dict(quantization="heal", kv_cache_dtype="fp8_e4m3"), "--kv-cache-dtype fp8_e4m3"),
    (dict(quantization="heal", enable_torch_compile=True), "--enable-torch-compile"),
    (dict(quantization="heal", tp_size=4), "--tp-size 4"),  # the default HEAL_ROW_SHARDS=2 serves TP 1 and 2
    (dict(quantization="heal", disaggregation_mode="prefill"), "--disaggregation-mode prefill"),
    # 0.5.17 keeps --enable-dp-attention; 0.5.23 resolves it into --attn-dp-size 2 (both refused)
    (dict(quantization="heal", tp_size=2, dp_size=2, enable_dp_attention=True), "data-parallel attention"),
])
def test_invalid_combinations_name_the_flag(plugin, tiny_model, kw, needle):
    with pytest.raises(ValueError) as e:
        _args(tiny_model, **kw)
    assert needle in str(e.value)


@pytest.fixture(scope="module")
def prequantized_model(tiny_model, tmp_path_factory):
    """The tiny checkpoint with an FP8 quantization_config, as a pre-quantized model carries it."""
    import json
    import shutil

    path = tmp_path_factory.mktemp("tiny-llama-fp8")
    shutil.copytree(tiny_model, path, dirs_exist_ok=True)
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic"}
    (path / "config.json").write_text(json.dumps(cfg))
    return str(path)


@pytest.mark.parametrize("kw", [dict(attention_backend="heal"), dict(quantization="heal"),
                                dict(quantization="layercast", attention_backend="triton")],
                         ids=["attention_backend", "quantization", "layercast"])
def test_prequantized_checkpoint_is_refused_at_start_up(plugin, prequantized_model, kw):
    with pytest.raises(ValueError) as e:
        _args(prequantized_model, **kw)
    assert "16-bit (bf16/fp16) checkpoints only" in str(e.value) and "'fp8'" in str(e.value)


def test_layouts_sglang_0523_adds_are_refused():
    """0.5.23's --attn-dp-size and --enable-layernorm-sp (whose reduce-scatter heal's row-parallel
    forward does not do); 0.5.17 has neither field, so the rules are checked on the arguments alone."""
    from types import SimpleNamespace

    from heal_sglang import args

    bad = args._refusals(SimpleNamespace(attn_dp_size=2, enable_layernorm_sp=True))
    assert bad == ["data-parallel attention (--attn-dp-size 2)",
                   "sequence-parallel layer norms (--enable-layernorm-sp)"]
    assert args._refusals(SimpleNamespace(attn_dp_size=1, enable_layernorm_sp=False)) == []


def test_tensor_parallel_needs_a_row_shard_count_it_divides(plugin, tiny_model, monkeypatch):
    monkeypatch.delenv("HEAL_ROW_SHARDS", raising=False)  # the default, 2, serves TP 1 and 2
    assert _args(tiny_model, quantization="heal", tp_size=2).tp_size == 2
    with pytest.raises(ValueError, match="HEAL_ROW_SHARDS=2"):
        _args(tiny_model, quantization="heal", tp_size=4)
    monkeypatch.setenv("HEAL_ROW_SHARDS", "4")
    sa = _args(tiny_model, quantization="heal", tp_size=2)
    assert sa.tp_size == 2 and sa.attention_backend == "heal"
    monkeypatch.setenv("HEAL_ROW_SHARDS", "2")
    with pytest.raises(ValueError, match="HEAL_ROW_SHARDS=2"):
        _args(tiny_model, quantization="heal", tp_size=4)
    for bad in ("3", "16"):
        monkeypatch.setenv("HEAL_ROW_SHARDS", bad)
        with pytest.raises(ValueError, match="power of two"):
            _args(tiny_model, quantization="heal", tp_size=2)


def test_model_features_are_refused(plugin, tiny_model):
    from sglang.srt.configs.model_config import ModelConfig

    from heal_sglang import args

    mc = ModelConfig(tiny_model)
    assert args.model_refusals(mc) == []
    mc.hf_text_config.use_sliding_window, mc.hf_text_config.sliding_window = True, 128
    mc.is_encoder_decoder = True
    bad = args.model_refusals(mc)
    assert any("sliding-window" in b for b in bad) and any("encoder-decoder" in b for b in bad)
    with pytest.raises(ValueError, match="--quantization heal cannot serve"):
        args.validate_model(type("A", (), {"quantization": "heal"})(), mc)


@pytest.mark.parametrize("kw,needle", [
    (dict(kv_cache_dtype="fp8_e4m3"), "--kv-cache-dtype fp8_e4m3"),
    (dict(speculative_algorithm="EAGLE"), "speculative decoding"),
    (dict(pp_size=2), "--pp-size 2"),
])
def test_flag_refusals_come_before_sglang_reads_the_model(plugin, kw, needle):
    """SGLang resolves a model path before anything else: a bad path must not hide heal's refusal."""
    with pytest.raises(ValueError, match=needle):
        _args("/nonexistent/model", quantization="heal", **kw)
