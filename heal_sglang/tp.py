"""Tensor parallelism under heal: every rule in one place.

Row-parallel layers (o_proj, down_proj) reduce their K dimension in ``HEAL_ROW_SHARDS``
shards added in a fixed pairwise tree (``heal_kernels.reduce.tree_sum``). Under TP each rank
computes its own slice of that tree and the ranks' FP32 partials are all-gathered and added
in rank order, so any ``--tp-size`` dividing ``HEAL_ROW_SHARDS`` gives the same bits and
NCCL never sums them. Here: the server-argument rule, the per-layer shard count and its
K-split check, the models whose row-parallel outputs are summed outside the layer (refused),
and the row-parallel forward itself.
"""

from __future__ import annotations

import functools

import torch
from sglang.srt.layers.linear import RowParallelLinear

from heal_kernels.reduce import tree_sum_stacked
from heal_sglang import compat, state


def rank_size(layer) -> tuple[int, int]:
    """(TP rank, TP size) of a parallel layer: its own attributes on SGLang 0.5.17, its group's on
    0.5.23 (where a layer holds ``tp_group``, None when unsharded). A layer with neither raises."""
    return _rank_size_reader()(layer)


@functools.cache  # called in every row-parallel forward: pick the reader once per process
def _rank_size_reader():
    if compat.installed() == compat.SGLANG_0517:
        return lambda layer: (layer.tp_rank, layer.tp_size)
    group_rank_size = compat.lookup(compat.GROUP_RANK_SIZE)
    return lambda layer: group_rank_size(layer.tp_group)


def server_refusal(tp_size: int, environ=None) -> str | None:
    """Why ``--tp-size`` cannot be served with the environment's HEAL_ROW_SHARDS, or None."""
    if tp_size <= 1:
        return None
    shards = state.row_shards_from_env(environ)
    if shards % tp_size:
        env = state.ROW_SHARDS_ENV
        return (f"--tp-size {tp_size} with {env}={shards}: set {env} to a power of two that --tp-size divides "
                f"(e.g. {env}=4 for TP 1, 2 and 4), the same for every run that must agree")
    return None


def local_shards(layer) -> int:
    """K shards this rank reduces for a row-parallel layer (its slice of the HEAL_ROW_SHARDS tree)."""
    if not isinstance(layer, RowParallelLinear):
        return 1
    tp = rank_size(layer)[1]
    shards = state.row_shards()
    if shards % tp:
        raise ValueError(f"HEAL_ROW_SHARDS={shards} is not a multiple of --tp-size {tp}")
    return shards // tp


def check_k_split(layer) -> None:
    """A row-parallel layer's K per rank must split into its local shards of whole 64-wide tiles."""
    shards = local_shards(layer)
    k = layer.weight.shape[1]
    if shards > 1 and (k % shards or (k // shards) % 64):
        raise ValueError(
            f"{type(layer).__name__} has K={k} per rank, which does not split into {shards} shards of whole "
            f"64-wide tiles: lower HEAL_ROW_SHARDS={state.row_shards()}"
        )


def summed_outside(model) -> list[str]:
    """Row-parallel layers under TP whose outputs the model sums outside the layer (refused)."""
    return [name for name, mod in model.named_modules()
            if isinstance(mod, RowParallelLinear) and rank_size(mod)[1] > 1 and not mod.reduce_results]


def row_parallel_forward(layer, input_, skip_all_reduce=False, forward_batch=None, output_tensor=None):
    """RowParallelLinear.forward for heal under TP: the ranks' FP32 partials are gathered and
    added in rank order by the same tree as one rank's K shards; NCCL never sums them."""
    if output_tensor is not None:
        raise NotImplementedError("heal's row-parallel layers do not write into caller-owned outputs")
    from sglang.srt.layers.moe.utils import should_skip_mlp_all_reduce

    if should_skip_mlp_all_reduce():
        raise NotImplementedError(
            "the decoder asked RowParallelLinear to leave its all-reduce to a fused residual/norm kernel, "
            "whose summation order heal cannot fix: drop --flashinfer-allreduce-fusion-backend"
        )
    rank, size = rank_size(layer)
    if layer.input_is_parallel:
        x = input_
    else:
        from sglang.srt.distributed import split_tensor_along_last_dim

        x = split_tensor_along_last_dim(input_, num_partitions=size)[rank].contiguous()
    from heal_sglang.quant import heal_linear

    partial = heal_linear(layer, x, None)
    if layer.reduce_results and not skip_all_reduce:
        if state.tp_reduce() == "nccl":  # benchmark switch only: order-dependent sum
            from sglang.srt.distributed import tensor_model_parallel_all_reduce

            out = tensor_model_parallel_all_reduce(partial)
            if layer.bias is not None and not layer.skip_bias_add:
                out = out + layer.bias
        else:
            bias = layer.bias if layer.bias is not None and not layer.skip_bias_add else None
            stacked = _gather_ranks(partial, rank, size)  # [size, *partial.shape]
            n = partial.shape[-1]
            # the ranks' partials and the bias added in one launch, in tree_sum's order
            out = tree_sum_stacked(stacked.reshape(size, -1, n), bias).view(partial.shape)
    else:
        # the caller reduces; the bias goes on rank 0 only, as in SGLang
        out = partial if (layer.bias is None or layer.skip_bias_add or rank) else partial + layer.bias
    return out, (layer.bias if layer.skip_bias_add else None)


def _gather_ranks(t: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """Every rank's tensor stacked in rank order (a gather moves bits; it never adds), over the TP group,
    which must be the layer's own (``rank``, ``size``)."""
    from sglang.srt.distributed import get_tp_group

    group = get_tp_group()
    if (group.rank_in_group, group.world_size) != (rank, size):
        # 0.5.23 may build a layer on another group (attn_tp, a replicated one): not served
        raise NotImplementedError(f"a row-parallel layer at TP rank {rank} of {size} is not sharded over the TP "
                                  f"group (rank {group.rank_in_group} of {group.world_size})")
    if t.is_cuda:
        return group.all_gather(t.unsqueeze(0), dim=0)
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(group.world_size)]
    dist.all_gather(parts, t.contiguous(), group=group.device_group)
    return torch.stack(parts)
