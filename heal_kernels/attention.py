"""HEAL paged attention on an INT16 KV cache: extend (prefill with a cached prefix) and decode.

    out[t, h] = sum_j softmax_j(s[t, h, j]) v[j, h // G],   s = q.k * sm_scale (optionally soft-capped)

over the keys j <= pos(t) of t's sequence (and pos(t) - j <= sliding_window if set).
K/V are read from the cache only, through ``kv_indices`` (the slot of each position of
each sequence, concatenated; ``kv_indptr`` [B+1] delimits sequences): write the new
tokens with ``kv_int16.store_kv`` first.  The maths and the fixed reduction order are
described in ``_kernels/attention.py``; a query token's output is bitwise the same
from ``attention_extend`` and ``attention_decode``, in any batch, chunking or page
placement.  Output float32 [T, Hq, D].
"""

from __future__ import annotations

import functools
import math

import torch

from heal_kernels import configs
from heal_kernels._kernels.attention import _attn_kernel, _decode_kernel, _merge_kernel
from heal_kernels._launch import launch_kernel
from heal_kernels._runtime import FLOAT_DTYPES, arch_key, cdiv, check_tensor, is_capturing, out_buffer
from heal_kernels.kv_int16 import Int16KV, check_cache, check_slots
from heal_kernels.matmul import SplitX, check_split_k, empty_split, split_tiles

_INDEX_DTYPES = (torch.int32, torch.int64)
_MAX_GRID_YZ = 65535  # CUDA's limit on a grid's second and third dimensions


@functools.lru_cache(maxsize=256)  # pure (AttentionLaunch is frozen); two launches per decode layer read it
def _launch_opts(arch: str, path: str, launch: configs.AttentionLaunch | None) -> dict:
    """The launch's options and launch constexprs (callers splat it and must not modify it)."""
    launch = launch or configs.attention_launch(arch, path)
    opts = {}
    if arch != "interpret":
        # enable_fp_fusion=False: every fp32 expression is evaluated as written, in every kernel that shares it.
        opts = {"enable_fp_fusion": False, "num_warps": launch.num_warps, "num_stages": launch.num_stages}
        if launch.maxnreg:
            opts["maxnreg"] = launch.maxnreg
    if path != "merge":
        opts["EXACT"] = arch == "interpret"
        opts["PREFETCH"] = launch.prefetch
    if path == "extend":
        opts["HALVES"] = launch.halves
    return opts


def _check_halves(launch: configs.AttentionLaunch, head_dim: int) -> None:
    if launch.halves not in (1, 2):
        raise ValueError(f"launch.halves={launch.halves}: must be 1 or 2")
    if launch.halves == 2 and head_dim // 2 < 32:
        raise ValueError(f"launch.halves=2 needs >= 32 of K's head_dim ({head_dim}) per half (the int8 MMA "
                         "tile's minimum)")


def _check_common(q, cache, kv_indptr, kv_indices, sm_scale, sliding_window, logit_cap, n_seqs):
    check_cache(cache)
    dev = cache.k.device
    check_tensor("q", q, dtypes=FLOAT_DTYPES, ndim=3, device=dev)
    hq, d = q.shape[1], q.shape[2]
    hk = cache.num_heads
    if d != cache.head_dim:
        raise ValueError(f"q has head_dim {d} but the cache holds head_dim {cache.head_dim}")
    if hq % hk:
        raise ValueError(f"q has {hq} heads, not a multiple of the cache's {hk} KV heads")
    check_tensor("kv_indptr", kv_indptr, dtypes=_INDEX_DTYPES, ndim=1, device=dev)
    if kv_indptr.shape[0] != n_seqs + 1:
        raise ValueError(f"kv_indptr has {kv_indptr.shape[0]} entries for {n_seqs} sequences (expected B + 1)")
    check_tensor("kv_indices", kv_indices, dtypes=_INDEX_DTYPES, ndim=1, device=dev)
    if not (isinstance(sm_scale, (int, float)) and 0 < sm_scale < math.inf):
        raise ValueError(f"sm_scale must be a positive finite number, got {sm_scale!r}")
    if not isinstance(sliding_window, int) or sliding_window < -1:
        raise ValueError(f"sliding_window must be -1 (none) or a non-negative int, got {sliding_window!r}")
    if not (isinstance(logit_cap, (int, float)) and 0 <= logit_cap < math.inf):
        raise ValueError(f"logit_cap must be finite and >= 0 (0 = none), got {logit_cap!r}")
    return hq, hk, d


def _check_batch(cache, kv_indptr, kv_indices, qo_indptr, limit_name, limit, n_tokens):
    """Eager-mode checks of the index tensors (one host sync; skipped inside CUDA-graph capture).

    Returns the longest extend (qo_indptr given) or kv length, which fixes the grid.
    """
    if is_capturing(kv_indptr.device):
        if limit is None:
            raise ValueError(f"{limit_name} must be given when launching inside CUDA-graph capture")
        return limit
    lens = (qo_indptr if qo_indptr is not None else kv_indptr).diff()
    kv_lens = kv_indptr.diff()
    zero = torch.zeros((), dtype=torch.int64, device=kv_indptr.device)
    stats = torch.stack([t.to(torch.int64) for t in (
        lens.max() if lens.numel() else zero,
        lens.min() if lens.numel() else zero,
        kv_lens.min() if kv_lens.numel() else zero,
        kv_indptr[0], kv_indptr[-1],
        qo_indptr[-1] if qo_indptr is not None else zero + n_tokens,
    )]).tolist()
    longest, shortest, kv_shortest, kv_first, kv_last, q_last = stats
    if shortest < 0 or kv_shortest < 0 or kv_first != 0:
        raise ValueError("kv_indptr and qo_indptr must start at 0 and be non-decreasing")
    if qo_indptr is None and kv_shortest < 1:
        raise ValueError("kv_indptr gives a decode sequence no kv positions: its new token must already be in "
                         "the cache (store_kv before attention_decode)")
    if kv_last > kv_indices.shape[0]:
        raise ValueError(f"kv_indptr ends at {kv_last} but kv_indices holds {kv_indices.shape[0]} slots")
    if q_last != n_tokens:
        raise ValueError(f"qo_indptr ends at {q_last} but q has {n_tokens} tokens")
    check_slots("kv_indices", kv_indices[:kv_last], cache.num_slots)
    if qo_indptr is not None and bool((lens > kv_lens).any()):
        raise ValueError("a sequence has more new tokens (qo_indptr) than kv positions (kv_indptr)")
    if limit is not None and longest > limit:
        raise ValueError(f"{limit_name}={limit} is below the longest sequence's {longest}")
    return longest if limit is None else limit


def validate_batch(
    cache: Int16KV,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    n_tokens: int,
    qo_indptr: torch.Tensor | None = None,
    max_len: int | None = None,
) -> int:
    """The index checks attention_extend (qo_indptr given) or attention_decode run before a launch.

    They cost a few host syncs per call.  A caller that launches every layer over the same index
    tensors (a serving engine: one batch, many layers) runs them here once per batch and passes
    ``validate=False`` to each launch.  Returns the longest extend (or kv) length, or ``max_len``.
    """
    check_cache(cache)
    check_tensor("kv_indptr", kv_indptr, dtypes=_INDEX_DTYPES, ndim=1, device=cache.k.device)
    check_tensor("kv_indices", kv_indices, dtypes=_INDEX_DTYPES, ndim=1, device=cache.k.device)
    if qo_indptr is not None:
        check_tensor("qo_indptr", qo_indptr, dtypes=_INDEX_DTYPES, ndim=1, device=cache.k.device)
    name = "max_extend_len" if qo_indptr is not None else "max_seq_len"
    return _check_batch(cache, kv_indptr, kv_indices, qo_indptr, name, max_len, n_tokens)


def _limit(validate, cache, kv_indptr, kv_indices, qo_indptr, limit_name, limit, n_tokens):
    if validate:
        return _check_batch(cache, kv_indptr, kv_indices, qo_indptr, limit_name, limit, n_tokens)
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"validate=False needs {limit_name} (a positive int, from validate_batch), got {limit!r}")
    return limit


def attention_extend(
    q: torch.Tensor,
    cache: Int16KV,
    qo_indptr: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    sm_scale: float,
    sliding_window: int = -1,
    logit_cap: float = 0.0,
    max_extend_len: int | None = None,
    out: torch.Tensor | None = None,
    numerics: configs.AttentionNumerics | None = None,
    launch: configs.AttentionLaunch | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Causal attention of the new tokens q [T, Hq, D] (``qo_indptr`` [B+1] delimits sequences).

    Sequence b has kv length kv_indptr[b+1] - kv_indptr[b], of which its last
    qo_indptr[b+1] - qo_indptr[b] positions are the new tokens (already in the cache).
    ``numerics``/``launch`` override the pinned configs, for tests and probes only.
    ``validate=False`` skips the index checks (host syncs) that ``validate_batch`` already ran on
    these index tensors; ``max_extend_len`` must then be given.
    """
    check_tensor("qo_indptr", qo_indptr, dtypes=_INDEX_DTYPES, ndim=1, device=q.device)
    n_seqs = qo_indptr.shape[0] - 1
    hq, hk, d = _check_common(q, cache, kv_indptr, kv_indices, sm_scale, sliding_window, logit_cap, n_seqs)
    t = q.shape[0]
    out = out_buffer("out", out, (t, hq, d), q.device)
    if t == 0 or n_seqs == 0:
        return out
    max_extend_len = _limit(validate, cache, kv_indptr, kv_indices, qo_indptr, "max_extend_len", max_extend_len, t)
    arch = arch_key(q.device)
    numerics = numerics or configs.attention_numerics(arch)
    el = launch or configs.attention_launch(arch, "extend")
    _check_halves(el, d)
    rows = el.rows
    group = hq // hk
    block_m = configs.extend_block_m(rows, group)
    tokens = block_m // group
    n_tiles = cdiv(max_extend_len, tokens)
    if max(n_tiles, n_seqs) > _MAX_GRID_YZ:
        raise ValueError(f"attention_extend launches max_extend_len / {tokens} = {n_tiles} q tiles for each of "
                         f"{n_seqs} sequences; at most {_MAX_GRID_YZ} of each fit the grid (max_extend_len="
                         f"{max_extend_len}; split the batch)")
    grid = (hk, n_seqs, n_tiles)
    launch_kernel(_attn_kernel, grid,
        q, out, qo_indptr, kv_indptr, kv_indices,
        cache.k, cache.k_scale, cache.v, cache.v_scale,
        float(sm_scale), int(sliding_window), float(logit_cap),
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        cache.k.stride(0), cache.k.stride(1), cache.k_scale.stride(0),
        GROUP=group, HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=numerics.kv_block, SPLIT=numerics.split_tokens,
        HAS_WINDOW=sliding_window >= 0, HAS_CAP=logit_cap > 0, **_launch_opts(arch, "extend", launch),
    )
    return out


def attention_decode(
    q: torch.Tensor,
    cache: Int16KV,
    kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    sm_scale: float,
    sliding_window: int = -1,
    logit_cap: float = 0.0,
    max_seq_len: int | None = None,
    out: torch.Tensor | None = None,
    numerics: configs.AttentionNumerics | None = None,
    launch: configs.AttentionLaunch | None = None,
    merge_launch: configs.AttentionLaunch | None = None,
    validate: bool = True,
    split_k: int = 0,
):
    """One new token per sequence, q [B, Hq, D], at position kv_len - 1 (already in the cache).

    The KV range is cut into fixed-size splits run in parallel and merged in ascending
    order.  ``max_seq_len`` (>= every kv length; e.g. the context length for CUDA graphs)
    bounds the splits; each sequence computes and merges only its own, so a large bound
    costs partial buffers and idle programs, not work.  ``validate=False``: as in attention_extend
    (``max_seq_len`` then required).  ``merge_launch`` overrides the merge kernel's launch (rows: heads
    per program), for probes; the merge folds each row's splits alone, so it never changes a bit.
    ``split_k`` > 0 returns (out, the ``heal_kernels.matmul.SplitX`` of out viewed as [B, Hq * D] with
    that K tile), written by the merge, for the o_proj that consumes out; out's bits do not depend on it.
    """
    n_seqs = q.shape[0] if isinstance(q, torch.Tensor) and q.dim() == 3 else -1
    hq, hk, d = _check_common(q, cache, kv_indptr, kv_indices, sm_scale, sliding_window, logit_cap, n_seqs)
    out = out_buffer("out", out, (n_seqs, hq, d), q.device)
    check_split_k(split_k)
    if n_seqs == 0:
        return (out, empty_split(0, hq * d, split_k, q.device)) if split_k > 0 else out
    max_seq_len = _limit(validate, cache, kv_indptr, kv_indices, None, "max_seq_len", max_seq_len, n_seqs)
    arch = arch_key(q.device)
    numerics = numerics or configs.attention_numerics(arch)
    dl = launch or configs.attention_decode_launch(arch, n_seqs, hk, d)
    target = dl.programs or 1
    d_parts = dl.d_parts or configs.attention_decode_launch(arch, n_seqs, hk, d).d_parts
    if d_parts not in (1, 2, 4, 8) or d % d_parts or d // d_parts < 16:
        raise ValueError(f"launch.d_parts={d_parts}: must be 1, 2, 4 or 8 and leave >= 16 of head_dim {d} per part")
    if dl.halves != 1:
        raise ValueError(f"launch.halves={dl.halves}: decode takes halves=1 (K/V column halves are an extend launch)")
    n_splits = max(1, cdiv(max_seq_len, numerics.split_tokens))
    # Programs along the splits: enough to fill the GPU; each takes every n_prog-th split
    # of its sequence, so splits past a sequence's end cost one idle program at most.
    n_prog = min(n_splits, max(1, cdiv(target, n_seqs * hk * d_parts)))
    group = hq // hk
    pm = torch.empty((n_seqs, hq, n_splits), dtype=torch.float32, device=q.device)
    pl = torch.empty_like(pm)
    pacc = torch.empty((n_seqs, hq, n_splits, d), dtype=torch.float32, device=q.device)
    qs, ks, ps = q.stride(), cache.k.stride(), pm.stride()  # one call each: eager launches pay for every one
    launch_kernel(_decode_kernel, (n_prog * d_parts, n_seqs, hk),
        q, pm, pl, pacc, kv_indptr, kv_indices,
        cache.k, cache.k_scale, cache.v, cache.v_scale,
        float(sm_scale), int(sliding_window), float(logit_cap),
        qs[0], qs[1], ks[0], ks[1], cache.k_scale.stride(0),
        ps[0], ps[1], ps[2],
        GROUP=group, HEAD_DIM=d, ROWS=configs.decode_rows(group), BLOCK_N=numerics.kv_block,
        SPLIT=numerics.split_tokens, HAS_WINDOW=sliding_window >= 0, HAS_CAP=logit_cap > 0, D_PARTS=d_parts,
        **_launch_opts(arch, "decode", dl),
    )
    ml = merge_launch or configs.attention_launch(arch, "merge")
    if ml.rows and ml.rows & (ml.rows - 1):
        raise ValueError(f"merge_launch.rows={ml.rows}: heads per merge program must be a power of two")
    hpp = min(ml.rows or 8, hq & -hq)  # a power of two dividing hq
    # the split of the output rows [B, hq * d] in the merge itself: whole K tiles per program, heads contiguous
    outs = out.stride()
    fused = split_k > 0 and (hpp * d) % split_k == 0 and outs[1] == d and outs[2] == 1
    split = empty_split(n_seqs, hq * d, split_k, q.device) if fused else None
    sp = split if split is not None else SplitX(out, out, out, 1)  # placeholders: no split written
    launch_kernel(_merge_kernel, (n_seqs, hq // hpp),
        pm, pl, pacc, out, kv_indptr, sp.hi, sp.lo, sp.ts,
        ps[0], ps[1], ps[2], outs[0], outs[1], sp.hi.stride(0), sp.ts.stride(0),
        hq * d, sp.ts.shape[-1],
        SPLIT=numerics.split_tokens, HEADS_PER_PROG=hpp, HEAD_DIM=d, SPLIT_OUT=fused, BLOCK_K=max(split_k, 1),
        **_launch_opts(arch, "merge", ml),
    )
    if split_k > 0 and not fused:
        split = split_tiles(out.reshape(n_seqs, hq * d), split_k)
    return (out, split) if split_k > 0 else out
