"""Quantization methods ``heal`` and ``layercast``: 16-bit weights, FP32 activations.

Neither quantizes anything: the names select how linear layers, the lm_head and
the embedding compute.  Both keep the checkpoint's 16-bit weights (one copy) and
run the model with FP32 activations (the plugin sets ``--dtype float32``).

- heal: weights converted once, in place, to FP16 with a power-of-two scale per
  output channel; every product is ``heal_kernels.heal_matmul`` (compensated,
  fixed reduction order, batch invariant).
- layercast (Yuan et al., NeurIPS 2025): weights upcast to FP32 per op, FP32
  cuBLAS GEMMs.  The reference point HEAL is compared against, not batch invariant.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sglang.srt.layers.linear import LinearBase
from sglang.srt.layers.quantization.base_config import LinearMethodBase, QuantizationConfig, QuantizeMethodBase
from sglang.srt.layers.vocab_parallel_embedding import VocabParallelEmbedding
from sglang.srt.utils import set_weight_attrs
from torch.nn import Parameter

from heal_kernels.matmul import HealWeight, heal_matmul, prepare_weight
from heal_sglang import state, tp
from heal_sglang.ops import take_presplit


def _create_16bit_weight(layer, input_size_per_partition, output_partition_sizes, extra_weight_attrs):
    # params_dtype is the FP32 activation dtype; the weight keeps the checkpoint's 16 bits.
    weight = Parameter(
        torch.empty(sum(output_partition_sizes), input_size_per_partition, dtype=state.weight_dtype()),
        requires_grad=False,
    )
    set_weight_attrs(weight, {"input_dim": 1, "output_dim": 0})
    layer.register_parameter("weight", weight)
    set_weight_attrs(weight, extra_weight_attrs)


def _fp32_input(name: str, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32:
        raise ValueError(
            f"{name} received {x.dtype} activations; heal and layercast run with FP32 activations "
            "(launch with --dtype float32 or leave --dtype at auto)"
        )
    return x


def _heal_convert(layer) -> None:
    tp.check_k_split(layer)
    hw = prepare_weight(layer.weight.data, inplace=True)
    layer.weight.data = hw.weight  # same storage, now fp16
    layer.heal_scale = hw.scale


def heal_linear(layer, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    x = _fp32_input(type(layer).__name__, x)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    # x's producer (RMSNorm, SiLU-mul) may have written its split too: no split launch then
    # (heal_matmul refuses a split made with another K tile than its numerics')
    out = heal_matmul(x2, HealWeight(layer.weight, layer.heal_scale), bias, k_shards=tp.local_shards(layer),
                      x_split=take_presplit(x2))
    return out.view(*shape[:-1], out.shape[-1])


class _16BitWeights:
    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra_weight_attrs):
        _create_16bit_weight(layer, input_size_per_partition, output_partition_sizes, extra_weight_attrs)


class _HealCompute(_16BitWeights):
    def process_weights_after_loading(self, layer) -> None:
        _heal_convert(layer)

    def apply(self, layer, x, bias=None):
        return heal_linear(layer, x, bias)


class HealLinearMethod(_HealCompute, LinearMethodBase):
    pass


class HealEmbeddingMethod(_HealCompute, QuantizeMethodBase):
    """Embedding rows and (tied or untied) lm_head logits from the same converted weight."""

    def embedding(self, layer, input_):
        # fp16 value times a power of two: the bf16 checkpoint value, exactly, in FP32
        return F.embedding(input_, layer.weight).float() * layer.heal_scale[input_].unsqueeze(-1)


class _LayerCastCompute(_16BitWeights):
    def apply(self, layer, x, bias=None):
        x = _fp32_input(type(layer).__name__, x)
        return F.linear(x, layer.weight.float(), None if bias is None else bias.float())


class LayerCastLinearMethod(_LayerCastCompute, LinearMethodBase):
    pass


class LayerCastEmbeddingMethod(_LayerCastCompute, QuantizeMethodBase):
    def embedding(self, layer, input_):
        return F.embedding(input_, layer.weight).float()


class _FP32ActivationConfig(QuantizationConfig):
    name = ""
    linear_method: type = LinearMethodBase
    embedding_method: type = QuantizeMethodBase

    def get_name(self) -> str:
        return self.name

    def get_supported_act_dtypes(self) -> list[torch.dtype]:
        return [torch.float32]

    @classmethod
    def get_min_capability(cls) -> int:
        return 80  # fp16 and int8 tensor-core MMAs (Ampere and later)

    @staticmethod
    def get_config_filenames() -> list[str]:
        return []  # works on any unquantized checkpoint

    @classmethod
    def override_quantization_method(cls, hf_quant_cfg, user_quant) -> str | None:
        # SGLang asks every method while it reads a checkpoint's quantization_config; a
        # pre-quantized checkpoint cannot be served from its 16-bit weights, so refuse it
        # here, at start-up, in our words rather than SGLang's generic mismatch.
        if user_quant == cls.name and hf_quant_cfg:
            method = hf_quant_cfg.get("quant_method", "?") if isinstance(hf_quant_cfg, dict) else "?"
            flags = f"--quantization {cls.name}"
            if cls.name == state.HEAL:
                flags = "--attention-backend heal / --quantization heal"
            raise ValueError(
                f"{flags} serves 16-bit (bf16/fp16) checkpoints only, but this checkpoint is pre-quantized "
                f"(its config carries quantization_config with quant_method={method!r}); use its 16-bit original"
            )
        return None

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        return cls()

    def get_quant_method(self, layer, prefix: str):
        if isinstance(layer, VocabParallelEmbedding):  # ParallelLMHead included
            return self.embedding_method()
        if isinstance(layer, LinearBase):
            return self.linear_method()
        if "MoE" in type(layer).__name__:
            raise NotImplementedError(
                f"--quantization {self.name} does not serve mixture-of-experts layers ({prefix})"
            )
        return None

    def get_scaled_act_names(self) -> list[str]:
        return []


class HealConfig(_FP32ActivationConfig):
    name = state.HEAL
    linear_method = HealLinearMethod
    embedding_method = HealEmbeddingMethod


class LayerCastConfig(_FP32ActivationConfig):
    name = state.LAYERCAST
    linear_method = LayerCastLinearMethod
    embedding_method = LayerCastEmbeddingMethod
