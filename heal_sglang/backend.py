"""Attention backend ``heal``: INT16 K/V, exact scores, fixed-order FP32 softmax.

Prefill (extend) and decode both read prefix and new tokens through the cache
(new K/V are written first), with KV blocks aligned to absolute positions, so a
token's output does not depend on how its prompt was chunked, cached or batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sglang.srt.layers.attention.base_attn_backend import AttentionBackend

from heal_kernels._launch import launch_kernel
from heal_kernels.attention import attention_decode, attention_extend, validate_batch
from heal_kernels.kv_int16 import check_slots
from heal_sglang import compat
from heal_sglang.kv_cache import is_int16_pool, layer_cache
from heal_sglang.ops import forget_presplit, note_checked_positions, note_presplit, presplit_k


@dataclass
class _Metadata:
    kv_indptr: torch.Tensor  # [B + 1] over each sequence's full kv length (new tokens included)
    kv_indices: torch.Tensor
    qo_indptr: torch.Tensor | None  # extend only
    max_len: int  # longest extend (extend) or a bound on every kv length (decode)
    n_tokens: int = -1  # the batch's query tokens, when its indices were validated once (eager)


class HealAttnBackend(AttentionBackend):
    def __init__(self, model_runner):
        super().__init__()
        pool = model_runner.token_to_kv_pool
        if not is_int16_pool(pool):
            raise RuntimeError(
                "--attention-backend heal needs heal's INT16 KV pool, but the pool is "
                f"{type(pool).__name__} with {type(getattr(pool, 'quant_method', None)).__name__}: "
                "the heal_sglang plugin's pool hook is not active (run `python -m heal_sglang.check`)"
            )
        self.device = model_runner.device
        self.pool = pool
        self.req_to_token = model_runner.req_to_token_pool.req_to_token
        self.max_context_len = int(model_runner.model_config.context_len)
        max_bs = model_runner.req_to_token_pool.size
        self.kv_indptr = torch.zeros(max_bs + 1, dtype=torch.int64, device=self.device)
        self.qo_indptr = torch.zeros(max_bs + 1, dtype=torch.int64, device=self.device)
        self.graph_kv_indices = None
        self.forward_metadata: _Metadata | None = None
        # SGLang's paged-index kernel (it moved module in 0.5.23; the first 7 parameters kept their order)
        self.kv_indices_kernel = compat.lookup(compat.KV_INDICES)

    # -- metadata ------------------------------------------------------------------

    def _fill_kv(self, bs, seq_lens, req_pool_indices, kv_indices):
        kv_indptr = self.kv_indptr[: bs + 1]
        kv_indptr[1:] = torch.cumsum(seq_lens[:bs], dim=0)
        if bs > 0:
            launch_kernel(self.kv_indices_kernel, (bs,),
                self.req_to_token, req_pool_indices[:bs], seq_lens[:bs], kv_indptr, None, kv_indices,
                self.req_to_token.stride(0),
            )
        return kv_indptr

    def init_forward_metadata(self, forward_batch):
        forget_presplit()  # a split left by the last batch (e.g. its final norm's) is never read
        mode = forward_batch.forward_mode
        bs = forward_batch.batch_size
        if not (mode.is_decode_or_idle() or mode.is_extend()):
            raise NotImplementedError(f"--attention-backend heal does not serve forward mode {mode.name}")
        if mode.is_mixed():
            raise NotImplementedError("--attention-backend heal does not serve mixed chunks (--enable-mixed-chunk)")
        total = forward_batch.seq_lens_sum
        if total is None:
            total = int(forward_batch.seq_lens[:bs].sum()) if bs else 0
        kv_indices = torch.empty(max(int(total), 1), dtype=torch.int64, device=self.device)
        kv_indptr = self._fill_kv(bs, forward_batch.seq_lens, forward_batch.req_pool_indices, kv_indices)
        if mode.is_decode_or_idle():
            cpu = forward_batch.seq_lens_cpu
            longest = int(cpu[:bs].max()) if cpu is not None and bs else self.max_context_len
            md = _Metadata(kv_indptr, kv_indices, None, max(longest, 1), n_tokens=bs)
        else:
            qo_indptr = self.qo_indptr[: bs + 1]
            qo_indptr[1:] = torch.cumsum(forward_batch.extend_seq_lens[:bs], dim=0)
            ext = forward_batch.extend_seq_lens_cpu
            longest = max(ext) if ext else int(forward_batch.extend_seq_lens.max())
            n_tokens = sum(ext) if ext else int(forward_batch.extend_seq_lens[:bs].sum())
            md = _Metadata(kv_indptr, kv_indices, qo_indptr, int(longest), n_tokens=int(n_tokens))
        self._validate(md, forward_batch)
        self.forward_metadata = md

    def _validate(self, md: _Metadata, forward_batch) -> None:
        """The index and slot checks of heal's kernels, once per batch (eager): each is a few host
        syncs, and run per layer they stall the launch queue 32+ times a step.  Every layer then
        launches with validate=False over these same tensors."""
        cache = layer_cache(self.pool, self.pool.start_layer)
        if md.kv_indptr.shape[0] > 1:
            validate_batch(cache, md.kv_indptr, md.kv_indices, n_tokens=md.n_tokens, qo_indptr=md.qo_indptr,
                           max_len=md.max_len)
        loc = forward_batch.out_cache_loc
        if loc is not None:
            check_slots("out_cache_loc", loc, cache.num_slots)
        self.pool.quant_method.validated_loc = loc
        note_checked_positions(forward_batch.positions)

    # -- CUDA graphs (decode) --------------------------------------------------------

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int):
        self.graph_kv_indices = torch.zeros(max_bs * self.max_context_len, dtype=torch.int64, device=self.device)

    def init_forward_metadata_out_graph(self, forward_batch, in_capture: bool = False):
        forget_presplit()
        mode = forward_batch.forward_mode
        if not mode.is_decode_or_idle() or forward_batch.spec_info is not None:
            raise NotImplementedError(f"--attention-backend heal captures decode CUDA graphs only, got {mode.name}")
        bs = forward_batch.batch_size
        kv_indptr = self._fill_kv(bs, forward_batch.seq_lens, forward_batch.req_pool_indices, self.graph_kv_indices)
        # The split count is fixed by the context length, so one graph serves every length.
        self.forward_metadata = _Metadata(kv_indptr, self.graph_kv_indices, None, self.max_context_len)
        self.pool.quant_method.validated_loc = None  # captured launches check nothing; eager ones check again
        note_checked_positions(None)

    def init_forward_metadata_in_graph(self, forward_batch):
        pass

    def get_cuda_graph_seq_len_fill_value(self):
        return 1

    # -- forward ---------------------------------------------------------------------

    @staticmethod
    def _check_layer(layer):
        if layer.qk_head_dim != layer.v_head_dim:
            raise NotImplementedError(
                f"heal attention needs equal K and V head dims, layer {layer.layer_id} has "
                f"{layer.qk_head_dim} and {layer.v_head_dim}"
            )
        if layer.sliding_window_size is not None and layer.sliding_window_size > -1:
            raise NotImplementedError(
                f"heal attention does not serve sliding-window layers (layer {layer.layer_id}: "
                f"window {layer.sliding_window_size})"
            )
        if layer.logit_cap and getattr(layer, "logit_capping_method", "tanh") != "tanh":
            raise NotImplementedError(f"heal attention caps logits with tanh only, got {layer.logit_capping_method}")

    @staticmethod
    def _validated(md: _Metadata, q: torch.Tensor) -> bool:
        """Whether init_forward_metadata checked this batch's indices for these query tokens."""
        return md.n_tokens >= 0 and q.shape[0] == md.n_tokens

    def _save(self, layer, forward_batch, k, v, save_kv_cache):
        if save_kv_cache:
            if k is None or v is None:
                raise ValueError("heal attention needs the new tokens' k and v to write them to the cache")
            self.pool.set_kv_buffer(layer, forward_batch.out_cache_loc, k, v)

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        self._check_layer(layer)
        self._save(layer, forward_batch, k, v, save_kv_cache)
        md = self.forward_metadata
        hq, d = layer.tp_q_head_num, layer.qk_head_dim
        q = q.view(-1, hq, d)
        out = attention_extend(
            q, layer_cache(self.pool, layer.layer_id), md.qo_indptr, md.kv_indptr, md.kv_indices,
            sm_scale=float(layer.scaling), logit_cap=float(layer.logit_cap or 0.0), max_extend_len=md.max_len,
            validate=not self._validated(md, q),
        )
        return out.view(-1, hq * d)

    def forward_decode(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        self._check_layer(layer)
        self._save(layer, forward_batch, k, v, save_kv_cache)
        md = self.forward_metadata
        hq, d = layer.tp_q_head_num, layer.qk_head_dim
        bs = md.kv_indptr.shape[0] - 1
        q = q.view(bs, hq, d)
        # heal's o_proj reads the merge's split of this output (no split launch there)
        split_k = presplit_k(hq * d, q.device)
        res = attention_decode(
            q, layer_cache(self.pool, layer.layer_id), md.kv_indptr, md.kv_indices,
            sm_scale=float(layer.scaling), logit_cap=float(layer.logit_cap or 0.0), max_seq_len=md.max_len,
            validate=not self._validated(md, q), split_k=split_k,
        )
        out = (res[0] if split_k else res).view(-1, hq * d)
        if split_k:
            note_presplit(out, res[1])
        return out
