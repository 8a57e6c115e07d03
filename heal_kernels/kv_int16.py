"""INT16 K/V cache: per-token, per-head quantization and paged store (torch references: heal_kernels.reference).

A row r (one token of one head) is stored as int16 values q and one fp32 scale s:

    s = max|r| / QMAX (1 for an all-zero row),  q = round_half_up(r / s) clamped to +-QMAX

QMAX = 32639 = 127 * 256 + 127, so q = hi * 256 + lo splits into two int8 parts; the
attention kernels multiply those on int8 tensor cores, exactly.  Relative step:
1/32639 of the row's max (~2**-15), against BF16's 2**-8 of each value.
Bytes per token and head: 2 D + 4 (head_dim 128: 260 vs BF16's 256, 1.6% more).
Quantization is elementwise per row, so a token's cached bytes never depend on what
else was in its batch.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from heal_kernels._kernels.kv_int16 import _kv_store_kernel
from heal_kernels._kernels.primitives import QMAX as QMAX  # defined once, there
from heal_kernels._launch import launch_kernel
from heal_kernels._runtime import (
    FLOAT_DTYPES,
    check_index_range,
    check_positive_int,
    check_shape,
    check_tensor,
    is_interpret,
    next_power_of_2,
)

HEAD_DIMS = (64, 128, 256)


@dataclass(frozen=True)
class Int16KV:
    """One layer's paged K/V cache: int16 values [slots, H, D] and fp32 scales [slots, H]."""

    k: torch.Tensor
    k_scale: torch.Tensor
    v: torch.Tensor
    v_scale: torch.Tensor

    @property
    def num_slots(self) -> int:
        return self.k.shape[0]

    @property
    def num_heads(self) -> int:
        return self.k.shape[1]

    @property
    def head_dim(self) -> int:
        return self.k.shape[2]


def bytes_per_token(num_heads: int, head_dim: int) -> int:
    """K and V bytes one token takes in an Int16KV cache (values and scales)."""
    return 2 * num_heads * (2 * head_dim + 4)


def new_int16_kv(num_slots: int, num_heads: int, head_dim: int, device) -> Int16KV:
    check_positive_int("num_slots", num_slots)
    check_positive_int("num_heads", num_heads)
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim={head_dim!r} is not supported; expected one of {HEAD_DIMS}")
    z16 = lambda: torch.zeros((num_slots, num_heads, head_dim), dtype=torch.int16, device=device)
    one = lambda: torch.ones((num_slots, num_heads), dtype=torch.float32, device=device)
    return Int16KV(z16(), one(), z16(), one())


# Caches that passed check_cache, by id(cache.k): weak references to the four tensors.  A serving
# engine passes the same per-layer buffers to every store and attention launch, and a cache's
# buffers are never resized in place, so one check per set of tensors is enough; a freed tensor
# (whose id may be reused) drops out because its weak reference dies.
_CHECKED_CACHES: dict[int, tuple[weakref.ref, ...]] = {}


def check_cache(cache: Int16KV, name: str = "cache") -> None:
    if not isinstance(cache, Int16KV):
        raise ValueError(f"{name} must be an Int16KV, got {type(cache).__name__}")
    parts = (cache.k, cache.k_scale, cache.v, cache.v_scale)
    seen = _CHECKED_CACHES.get(id(cache.k))
    if seen is not None and all(ref() is t for ref, t in zip(seen, parts, strict=True)):
        return
    _check_cache(cache, name)
    if len(_CHECKED_CACHES) >= 4096:
        _CHECKED_CACHES.clear()
    _CHECKED_CACHES[id(cache.k)] = tuple(weakref.ref(t) for t in parts)


def _check_cache(cache: Int16KV, name: str) -> None:
    check_tensor(f"{name}.k", cache.k, dtypes=(torch.int16,), ndim=3)
    dev = cache.k.device
    s, h, d = cache.k.shape
    if d not in HEAD_DIMS:
        raise ValueError(f"{name} has head_dim={d}; supported: {HEAD_DIMS}")
    check_tensor(f"{name}.v", cache.v, dtypes=(torch.int16,), ndim=3, device=dev)
    check_shape(f"{name}.v", cache.v, (s, h, d))
    for nm, t in ((f"{name}.k_scale", cache.k_scale), (f"{name}.v_scale", cache.v_scale)):
        check_tensor(nm, t, dtypes=(torch.float32,), ndim=2, device=dev)
        check_shape(nm, t, (s, h))
    for nm, t in ((f"{name}.k", cache.k), (f"{name}.v", cache.v)):
        if t.stride(2) != 1 or t.stride(1) != d:
            raise ValueError(f"{nm} must be contiguous in its head and dim axes, got strides {tuple(t.stride())}")
    if cache.k.stride(0) != cache.v.stride(0) or cache.k_scale.stride(0) != cache.v_scale.stride(0):
        raise ValueError(f"{name}.k and {name}.v (and their scales) must share strides")


def check_slots(name: str, idx: torch.Tensor, num_slots: int) -> None:
    """Raise ValueError unless every slot in idx is in [0, num_slots) (eager mode only)."""
    check_index_range(name, idx, num_slots, "slot indices", "the cache")


def _check_loc(loc: torch.Tensor, t: int, num_slots: int, device, validate: bool) -> None:
    check_tensor("loc", loc, dtypes=(torch.int64, torch.int32), ndim=1, device=device)
    if loc.shape[0] != t:
        raise ValueError(f"loc has {loc.shape[0]} slots for {t} tokens")
    if validate:
        check_slots("loc", loc, num_slots)


def store_kv(cache: Int16KV, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, validate: bool = True) -> None:
    """Quantize k, v [T, H, D] (fp32/bf16/fp16) and write them to the cache at slots ``loc`` [T].

    Every argument is checked before anything is written: a bad call leaves the cache as it was.
    ``validate=False`` skips only the range check of ``loc`` (two host syncs), for a caller that
    checked these slots already (``check_slots``; a serving engine: once per batch, not per layer).
    """
    check_cache(cache)
    dev = cache.k.device
    _, h, d = cache.k.shape
    for nm, x in (("k", k), ("v", v)):
        check_tensor(nm, x, dtypes=FLOAT_DTYPES, ndim=3, device=dev)
        if tuple(x.shape[1:]) != (h, d):
            raise ValueError(f"{nm} has heads x head_dim {tuple(x.shape[1:])}; the cache holds {(h, d)}")
    if k.shape[0] != v.shape[0]:
        raise ValueError(f"k has {k.shape[0]} tokens but v has {v.shape[0]}")
    _check_loc(loc, k.shape[0], cache.num_slots, dev, validate)
    if k.shape[0] == 0:
        return
    launch_kernel(_kv_store_kernel, (k.shape[0],),
        k, v, loc, cache.k, cache.k_scale, cache.v, cache.v_scale,
        h, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        cache.k.stride(0), cache.k.stride(1), cache.k_scale.stride(0),
        HEAD_DIM=d, BLOCK_H=next_power_of_2(h), num_warps=1 if is_interpret() else 4,
    )
