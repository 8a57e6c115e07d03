"""FP32 boundary ops vs their torch FP32 equivalents (memory-bound: GB/s vs the measured copy rate)."""

import pytest
import torch

from bench import timing
from bench.shapes import LLAMA3_8B_HEADS, LLAMA3_8B_HIDDEN, LLAMA3_8B_INTERMEDIATE
from heal_kernels import reference
from heal_kernels.activation import silu_and_mul
from heal_kernels.norm import rms_norm
from heal_kernels.rope import apply_rotary


@pytest.mark.parametrize("impl", ["heal", "torch_fp32"])
@pytest.mark.parametrize("m", [1, 64, 4096], ids=lambda m: f"M{m}")
@pytest.mark.parametrize("op", ["add_rmsnorm", "silu_and_mul", "rope"])
def test_rowop(benchmark, ceilings, op, m, impl):
    h = LLAMA3_8B_HIDDEN
    if op == "add_rmsnorm":
        x, r, w = torch.randn(m, h, device="cuda"), torch.randn(m, h, device="cuda"), torch.randn(h, device="cuda")
        nbytes = 4 * m * h * 4
        fn = ((lambda: rms_norm(x, w, 1e-5, r)) if impl == "heal"
              else (lambda: reference.rms_norm_ref(x, w, 1e-5, r, dtype=torch.float32)))
    elif op == "silu_and_mul":
        x = torch.randn(m, 2 * LLAMA3_8B_INTERMEDIATE, device="cuda")
        nbytes = 4 * m * 3 * LLAMA3_8B_INTERMEDIATE
        fn = (lambda: silu_and_mul(x)) if impl == "heal" else (lambda: reference.silu_and_mul_ref(x, torch.float32))
    else:
        hq, hk, d = LLAMA3_8B_HEADS
        cache = reference.rope_cos_sin_cache(8192, d, base=500000.0, device="cuda")
        pos = torch.randint(0, 8192, (m,), device="cuda")
        q, k = torch.randn(m, hq * d, device="cuda"), torch.randn(m, hk * d, device="cuda")
        nbytes = 4 * m * (hq + hk) * d * 2
        fn = ((lambda: apply_rotary(pos, q, k, cache, d)) if impl == "heal"
              else (lambda: (reference.rope_ref(pos, q, cache, d, dtype=torch.float32),
                             reference.rope_ref(pos, k, cache, d, dtype=torch.float32))))
    timing.run(benchmark, fn, nbytes=nbytes, ceilings=ceilings, op=op, m=m, impl=impl, device=ceilings["device"])
