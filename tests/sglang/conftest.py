"""SGLang-side tests: real SGLang objects (pools, ForwardBatch, layers) on CPU.

The plugin is loaded through SGLang's own ``load_plugins()`` (the entry point),
exactly as the server loads it.
"""

import socket

import pytest


@pytest.fixture(scope="session")
def plugin():
    from sglang.srt.plugins import load_plugins

    from heal_sglang.plugin import register

    load_plugins()
    register()  # raises what load_plugins only logs
    return True


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A two-layer Llama checkpoint on disk, for SGLang's ServerArgs / ModelConfig resolution."""
    import torch
    import transformers

    path = tmp_path_factory.mktemp("tiny-llama")
    cfg = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=512, max_position_embeddings=1024,
                                   torch_dtype="bfloat16")
    transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tp_group():
    """A one-rank tensor-parallel group on gloo, which SGLang's parallel layers need."""
    from sglang.srt.distributed import init_distributed_environment
    from sglang.srt.distributed.parallel_state import model_parallel_is_initialized

    from tests.sglang._sglang import initialize_model_parallel

    if not model_parallel_is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        init_distributed_environment(world_size=1, rank=0, local_rank=0,
                                     distributed_init_method=f"tcp://127.0.0.1:{port}", backend="gloo")
        initialize_model_parallel(1)
    return True


@pytest.fixture
def heal_mode():
    from heal_sglang import state

    prev = state.current()
    yield state
    state._current = prev  # the test switched modes with set_mode; the process's own numerics come back
