"""The attention kernel's K and V parts: the GPU's byte-permute code gives the bits of the Triton
ops it replaces (the interpreter runs the Triton ops; no PTX runs there), for every int16 value
the KV store holds."""

import pytest
import torch
import triton
import triton.language as tl

from heal_kernels._kernels.attention import _k_bytes, _v_parts
from heal_kernels._kernels.primitives import QMAX

ROWS, COLS = 512, 256  # 131072 values: every int16 in [-QMAX, QMAX], and zeros


@triton.jit
def _parts_kernel(x_ptr, kh_ptr, kl_ptr, vh_ptr, vl_ptr, EXACT: tl.constexpr, R: tl.constexpr, C: tl.constexpr):
    i = tl.program_id(0) * R + tl.arange(0, R)[:, None]
    at = i * C + tl.arange(0, C)[None, :]
    x = tl.load(x_ptr + at)
    kh, kl = _k_bytes(x, EXACT)
    vh, vl = _v_parts(x, EXACT)
    tl.store(kh_ptr + at, kh)
    tl.store(kl_ptr + at, kl)
    tl.store(vh_ptr + at, vh)
    tl.store(vl_ptr + at, vl)


def _values(device):
    v = torch.zeros(ROWS * COLS, dtype=torch.int16)
    every = torch.arange(-QMAX, QMAX + 1, dtype=torch.int16)
    v[: every.numel()] = every[torch.randperm(every.numel(), generator=torch.Generator().manual_seed(0))]
    return v.view(ROWS, COLS).to(device)


def _parts(x, exact):
    outs = [torch.full_like(x, -1, dtype=torch.int8) for _ in range(2)]
    outs += [torch.full_like(x, float("nan"), dtype=torch.float16) for _ in range(2)]
    _parts_kernel[(ROWS // 16,)](x, *outs, EXACT=exact, R=16, C=COLS)
    return outs


def test_parts_hold_the_value(device):
    x = _values(device)
    kh, kl, vh, vl = _parts(x, exact=True)
    k = x.long()
    assert torch.equal(kh.long() * 256 + kl.long() + 128, k)
    assert torch.equal(vh.double() * 256 + vl.double(), k.double())
    assert (vl >= -128).all() and (vl <= 127).all()


@pytest.mark.gpu
def test_gpu_byte_permutes_give_the_triton_ops_bits():
    x = _values("cuda")
    for got, want in zip(_parts(x, exact=False), _parts(x, exact=True), strict=True):
        assert torch.equal(got.view(torch.int16 if got.dtype == torch.float16 else torch.int8),
                           want.view(torch.int16 if want.dtype == torch.float16 else torch.int8))
