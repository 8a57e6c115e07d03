"""heal_matmul vs torch FP16/BF16 (cuBLAS), TF32 and FP32 at Llama-3-8B shapes.

    make bench        (GPU; results in bench-results.json, table via bench/report.py)
"""

import pytest
import torch

from bench import timing
from bench.shapes import BENCH_M, LLAMA3_8B_LINEARS
from heal_kernels.matmul import heal_matmul, prepare_weight

IMPLS = ["heal", "fp16", "bf16", "tf32", "fp32"]
# Enough copies of each weight that consecutive calls never find theirs in the 50 MB L2.
ROTATE_BYTES = 256 << 20


@pytest.fixture(scope="module")
def weights():
    cache = {}

    def get(n, k):
        if (n, k) not in cache:
            cache.clear()
            torch.cuda.empty_cache()
            copies = max(1, -(-ROTATE_BYTES // (2 * n * k)))
            ws = [(torch.randn(n, k, device="cuda") * 0.02).bfloat16() for _ in range(copies)]
            cache[(n, k)] = [(w, prepare_weight(w)) for w in ws]
        return cache[(n, k)]

    return get


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m", BENCH_M, ids=lambda m: f"M{m}")
@pytest.mark.parametrize("name,n,k", LLAMA3_8B_LINEARS, ids=[s[0] for s in LLAMA3_8B_LINEARS])
def test_matmul(benchmark, ceilings, weights, name, n, k, m, impl):
    copies = weights(n, k)
    x = torch.randn(m, k, device="cuda")
    flops = 2.0 * m * n * k
    # bytes the op must move: fp32 x in, 16-bit weight, fp32 out (fp16/bf16 baselines: 16-bit x and out)
    act_bytes = 4 if impl in ("heal", "tf32", "fp32") else 2
    w_bytes = 4 if impl in ("tf32", "fp32") else 2
    nbytes = m * k * act_bytes + n * k * w_bytes + m * n * act_bytes
    if impl == "heal":
        fns = [lambda hw=hw: heal_matmul(x, hw) for _, hw in copies]
    elif impl in ("fp16", "bf16"):
        dt = torch.float16 if impl == "fp16" else torch.bfloat16
        xs = x.to(dt)
        w16 = [w.to(dt) for w, _ in copies]
        fns = [lambda ws=ws: xs @ ws.T for ws in w16]
    else:
        torch.backends.cuda.matmul.allow_tf32 = impl == "tf32"
        w32 = [w.float() for w, _ in copies[: max(1, len(copies) // 2)]]  # 4-byte weights: half the copies
        fns = [lambda wf=wf: x @ wf.T for wf in w32]
    try:
        timing.run(benchmark, fns, flops=flops, nbytes=nbytes, ceilings=ceilings,
                   op="matmul", shape=name, m=m, n=n, k=k, impl=impl, device=ceilings["device"])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
