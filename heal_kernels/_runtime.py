"""Runtime helpers shared by the launchers: interpreter detection and argument checks.

Nothing here touches CUDA at import time, so the package imports on a CPU-only
machine (CI runs every kernel under ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import functools
import os
from typing import Iterable

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@functools.lru_cache(maxsize=1)
def is_interpret() -> bool:
    # Read once: Triton itself fixes interpreter mode when the kernels are decorated (at import), and
    # launchers call this several times per launch (eager serving pays for every host microsecond).
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cdiv(x: int, y: int) -> int:
    """triton.cdiv's value for host ints.  Triton's is a constexpr function: each host call unwraps its
    arguments and imports, microseconds that every eager launch paid several times over."""
    return (x + y - 1) // y


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n: triton.next_power_of_2's value for n >= 1.  For n <= 0 it is 1,
    as in SGLang, which replaces triton.next_power_of_2 with its own when it is imported (Triton's bit
    smearing gives 0 there, an invalid block size)."""
    return 1 << (n - 1).bit_length() if n > 0 else 1


def arch_key(device: torch.device) -> str:
    """Key for configs.py: 'interpret' on the CPU interpreter, else 'sm<major><minor>'."""
    if is_interpret() or device.type != "cuda":
        return "interpret"
    return _cuda_arch(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_arch(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm{major}{minor}"


def is_capturing(device: torch.device) -> bool:
    """Whether a launch on `device` now is recorded into a CUDA graph (where nothing may sync with the host)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def check_tensor(
    name: str,
    t,
    *,
    dtypes: Iterable[torch.dtype],
    ndim: int | tuple[int, ...],
    device: torch.device | None = None,
    last_contiguous: bool = True,
) -> None:
    """Raise ValueError naming `name` unless `t` is a tensor of the given dtypes and rank."""
    # Called several times per launch: each tensor attribute read once, the cheap tests first.
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        dtypes = tuple(dtypes)
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name} has dtype {str(t.dtype).replace('torch.', '')}; expected one of: {allowed}")
    nd = t.dim()
    if nd != ndim and (isinstance(ndim, int) or nd not in ndim):
        ndims = (ndim,) if isinstance(ndim, int) else ndim
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, but the other inputs are on {device}")
    if last_contiguous and nd > 0 and t.stride(-1) != 1 and t.shape[-1] > 1 and t.numel() > 0:
        raise ValueError(f"{name} must be contiguous in its last dimension, got strides {tuple(t.stride())}")
    if not t.is_cuda and not is_interpret():
        raise ValueError(
            f"{name} is on {t.device}; heal_kernels runs on CUDA (or set TRITON_INTERPRET=1 for the CPU interpreter)"
        )


def check_positive_int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def check_index_range(name: str, idx: torch.Tensor, limit: int, what: str, owner: str) -> None:
    """Raise ValueError unless every value of idx is in [0, limit) (past it a kernel reads out of bounds).

    One host sync; skipped inside CUDA-graph capture, where nothing may sync.
    """
    if idx.numel() == 0 or is_capturing(idx.device):
        return
    lo, hi = (int(v) for v in idx.aminmax())
    if lo < 0 or hi >= limit:
        raise ValueError(f"{name} holds {what} in [{lo}, {hi}], outside {owner}'s [0, {limit})")


def check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {tuple(shape)}")


def check_contiguous(name: str, t: torch.Tensor) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous, got strides {tuple(t.stride())} for shape {tuple(t.shape)}")


def out_buffer(name: str, out: torch.Tensor | None, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A float32 output: `out` after checking it, or a new tensor."""
    if out is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    check_tensor(name, out, dtypes=(torch.float32,), ndim=len(shape), device=device)
    check_shape(name, out, shape)
    check_contiguous(name, out)
    return out
