"""Synthetic checkpoints of real architectures (std-0.02 init), built on the GPU machine.

No checkpoint can be downloaded there, and ``--load-format dummy`` makes every run
decode the same degenerate tokens, so reproducibility is measured on randomly
initialised models of the real shapes, saved with ``save_pretrained`` in bf16,
plus a word-level tokenizer ("t0 t1 ...") so text endpoints work.
"""

from __future__ import annotations

import argparse
import json
import os

SHAPES = {
    # name: (architecture, config overrides)
    "llama-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                               rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                  "original_max_position_embeddings": 8192},
                               max_position_embeddings=131072)),
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                               rope_theta=500000.0, tie_word_embeddings=True, head_dim=64,
                               rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                               max_position_embeddings=131072)),
    "llama-small": ("llama", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=12,
                                  num_attention_heads=16, num_key_value_heads=4, vocab_size=32000)),
    "qwen2-small": ("qwen2", dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                                  num_attention_heads=16, num_key_value_heads=2, vocab_size=32000,
                                  tie_word_embeddings=True)),
    "mistral-small": ("mistral", dict(hidden_size=1024, intermediate_size=3584, num_hidden_layers=8,
                                      num_attention_heads=16, num_key_value_heads=4, vocab_size=32000,
                                      sliding_window=None)),
    "qwen3-small": ("qwen3", dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=8,
                                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=32000,
                                  tie_word_embeddings=True)),
    # for CPU runs under the Triton interpreter (bench.errormap's tests)
    "llama-tiny": ("llama", dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512)),
    "qwen3-tiny": ("qwen3", dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=512,
                                 tie_word_embeddings=True)),
}


def _tokenizer(vocab_size: int, path: str) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size - 3)}
    vocab.update({"<unk>": vocab_size - 3, "<s>": vocab_size - 2, "</s>": vocab_size - 1})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(path)


def bpe_tokenizer(corpus, vocab_size: int, path: str) -> tuple[int, int]:
    """A byte-level BPE tokenizer trained on ``corpus`` (texts), so real text maps to varied
    tokens (the word-level one maps English to <unk>); returns (bos id, eos id)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(path)
    return tok.token_to_id("<s>"), tok.token_to_id("</s>")


def make(name: str, path: str, seed: int = 0, context: int = 4096, corpus=None) -> str:
    """Create (once) the checkpoint ``name`` under ``path``; returns path.

    ``context`` is max_position_embeddings for shapes that do not carry their real model's own.
    ``corpus`` (texts): train a BPE tokenizer on it (at most 8192 tokens, within the model's
    vocabulary) instead of the word-level one, for prompts in natural language (MCR-Bench).
    """
    import torch
    import transformers

    if os.path.exists(os.path.join(path, "config.json")):
        return path
    arch, over = SHAPES[name]
    cfg_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
               "qwen3": transformers.Qwen3Config, "mistral": transformers.MistralConfig}[arch]
    model_cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
                 "qwen3": transformers.Qwen3ForCausalLM, "mistral": transformers.MistralForCausalLM}[arch]
    vocab = over["vocab_size"]
    over = {"max_position_embeddings": context, **over}  # the 8B and 1B shapes carry Llama-3.1/3.2's 131072
    os.makedirs(path, exist_ok=True)
    bos, eos = bpe_tokenizer(corpus, min(8192, vocab), path) if corpus is not None else (vocab - 2, vocab - 1)
    cfg = cfg_cls(**over, initializer_range=0.02, torch_dtype="bfloat16", bos_token_id=bos, eos_token_id=eos)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = model_cls(cfg).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    if corpus is None:
        _tokenizer(vocab, path)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"do_sample": False}, f)
    del model
    torch.cuda.empty_cache()
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("name", choices=sorted(SHAPES))
    ap.add_argument("path")
    a = ap.parse_args()
    print(make(a.name, a.path))
