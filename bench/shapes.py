"""Real model shapes shared by the benchmarks: (name, N, K) of each linear layer."""

# Llama-3-8B: hidden 4096, 32 q / 8 kv heads of 128, MLP 14336, vocab 128256.
LLAMA3_8B_LINEARS = [
    ("qkv_proj", 6144, 4096),
    ("o_proj", 4096, 4096),
    ("gate_up_proj", 28672, 4096),
    ("down_proj", 4096, 14336),
    ("lm_head", 128256, 4096),
]
LLAMA3_8B_HIDDEN = 4096
LLAMA3_8B_INTERMEDIATE = 14336
LLAMA3_8B_HEADS = (32, 8, 128)  # q heads, kv heads, head_dim

BENCH_M = [1, 16, 64, 256, 4096]
