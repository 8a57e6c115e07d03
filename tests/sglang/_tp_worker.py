"""One rank of the sharded-linear-stack check (tests/sglang/test_tp_gloo.py); run by torch.multiprocessing."""

import os


def run(rank: int, world: int, port: int, shards: int, out_dir: str, reduce: str = "ordered") -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["HEAL_TP_REDUCE"] = reduce
    import functools

    import torch
    from sglang.srt.distributed import init_distributed_environment, parallel_state, tensor_model_parallel_all_gather

    from tests.sglang._sglang import initialize_model_parallel

    # A CPU process cannot open NCCL communicators: SGLang's groups fall back to gloo.
    parallel_state.init_model_parallel_group = functools.partial(
        parallel_state.init_model_parallel_group, use_pynccl=False, use_custom_allreduce=False)
    init_distributed_environment(world_size=world, rank=rank, local_rank=rank,
                                 distributed_init_method=f"tcp://127.0.0.1:{port}", backend="gloo")
    initialize_model_parallel(world, rank)
    from sglang.srt.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
    from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    from heal_kernels.activation import silu_and_mul
    from heal_sglang import state
    from heal_sglang.plugin import register
    from heal_sglang.quant import HealConfig

    register()  # the RowParallelLinear.forward hook
    state.set_mode(state.HEAL, torch.bfloat16, shards)
    q = HealConfig()
    vocab, hidden, inter, heads, hd = 96, 256, 512, 4, 64
    g = torch.Generator().manual_seed(5)

    def w(*shape, scale=0.02):
        return (torch.randn(*shape, generator=g) * scale).to(torch.bfloat16)

    emb = VocabParallelEmbedding(vocab, hidden, quant_config=q, params_dtype=torch.float32)
    qkv = QKVParallelLinear(hidden, hd, heads, heads, bias=True, quant_config=q, params_dtype=torch.float32)
    o = RowParallelLinear(heads * hd, hidden, bias=False, quant_config=q, params_dtype=torch.float32)
    up = MergedColumnParallelLinear(hidden, [inter, inter], bias=False, quant_config=q, params_dtype=torch.float32)
    down = RowParallelLinear(inter, hidden, bias=True, quant_config=q, params_dtype=torch.float32)
    head = ParallelLMHead(vocab, hidden, quant_config=q, params_dtype=torch.float32)
    emb.weight.weight_loader(emb.weight, w(vocab, hidden))
    for shard in ("q", "k", "v"):
        qkv.weight_loader(qkv.weight, w(heads * hd, hidden), shard)
        qkv.bias.weight_loader(qkv.bias, w(heads * hd, scale=1.0).float(), shard)
    o.weight.weight_loader(o.weight, w(hidden, heads * hd))
    up.weight_loader(up.weight, w(inter, hidden), 0)
    up.weight_loader(up.weight, w(inter, hidden), 1)
    down.weight.weight_loader(down.weight, w(hidden, inter))
    down.bias.weight_loader(down.bias, w(hidden, scale=1.0).float())
    head.weight.weight_loader(head.weight, w(vocab, hidden))
    for m in (emb, qkv, o, up, down, head):
        m.quant_method.process_weights_after_loading(m)

    ids = torch.tensor([3, 17, 95, 0, 42, 42, 7])
    with torch.no_grad():
        h = emb(ids)
        a, _ = qkv(h)
        v = a[:, -heads * hd // world:]  # this rank's v heads stand in for the attention output
        h = h + o(v.contiguous())[0]
        gu, _ = up(h)
        h = h + down(silu_and_mul(gu))[0]
        logits = tensor_model_parallel_all_gather(head.quant_method.apply(head, h))[:, :vocab]
    torch.save({"h": h, "logits": logits}, os.path.join(out_dir, f"world{world}-shards{shards}-{reduce}-rank{rank}.pt"))
