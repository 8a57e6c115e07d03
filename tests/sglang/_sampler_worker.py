"""SGLang's real Sampler in a one-rank gloo process (tests/sglang/test_sampling.py): the logprobs it
returns for greedy rows, in an all-greedy batch and in a batch that also holds a sampled row."""

import os


def run(rank: int, port: int, mode: str, model: str, out_path: str) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    import functools

    import torch
    from sglang.srt.distributed import init_distributed_environment, parallel_state

    from tests.sglang._sglang import initialize_model_parallel

    parallel_state.init_model_parallel_group = functools.partial(
        parallel_state.init_model_parallel_group, use_pynccl=False, use_custom_allreduce=False)
    init_distributed_environment(world_size=1, rank=0, local_rank=0,
                                 distributed_init_method=f"tcp://127.0.0.1:{port}", backend="gloo")
    initialize_model_parallel(1, 0)
    from sglang.srt.layers.logits_processor import LogitsProcessorOutput
    from sglang.srt.layers.sampler import create_sampler
    from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo
    from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler

    from heal_sglang import compat, state
    from heal_sglang.plugin import register

    register()
    sa = ServerArgs(model_path=model, device="cuda", **({"quantization": mode} if mode != "stock" else {}))
    if compat.installed() == compat.SGLANG_0523:
        sa.resolve_once()
    set_global_server_args_for_scheduler(sa)
    if mode != "stock":
        state.set_mode(mode, torch.bfloat16, 1)
    sampler = create_sampler("pytorch")
    vocab = 32000
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, vocab, generator=g)  # rows: greedy, sampled, greedy

    def sample(rows, temps):
        n = len(rows)
        greedy = [t == 0 for t in temps]
        info = SamplingBatchInfo(
            temperatures=torch.tensor([[1.0 if t == 0 else t] for t in temps]),
            top_ps=torch.ones(n), top_ks=torch.tensor([1 if gr else vocab for gr in greedy], dtype=torch.int32),
            min_ps=torch.zeros(n), is_all_greedy=all(greedy), is_any_greedy=any(greedy),
            need_top_p_sampling=False, need_top_k_sampling=any(greedy), need_min_p_sampling=False,
            vocab_size=vocab, sampling_seed=torch.tensor([11 + r for r in rows]), device="cpu")
        out = LogitsProcessorOutput(next_token_logits=logits[rows].clone())
        ids = sampler.forward(out, info, True, [5] * n, [None] * n, torch.tensor([7] * n))
        top = [v.tolist() if hasattr(v, "tolist") else list(v) for v in out.next_token_top_logprobs_val]
        return ids, out.next_token_logprobs, top

    with torch.compiler.set_stance("force_eager"):
        alone = sample([0, 2], [0.0, 0.0])
        mixed = sample([0, 1, 2], [0.0, 0.7, 0.0])
    torch.save({"alone": alone, "mixed": mixed}, out_path)
