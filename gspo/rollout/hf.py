"""Rollout with an HF transformers causal LM: one prefill per prompt, shared by its n samples, then a KV-cached
decode loop that drops finished rows."""

from __future__ import annotations

import contextlib

import torch
from torch.distributed.fsdp import FSDPModule
from transformers import DynamicCache, PreTrainedModel

from gspo.errors import ConfigError
from gspo.model.loading import cache_keyword
from gspo.rollout.base import Generation, SamplingParams, Weights, left_pad, pad_cat, response_mask_from_ids
from gspo.rollout.definition import EngineSpec
from gspo.rollout.seeded import GumbelNoise, draw_tokens, response_keys

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": None}


class HFRolloutEngine:
    """Generates with ``model``: the policy itself, on one process or FSDP2-sharded over the ranks.

    Each prompt is encoded once and its KV cache repeated for its ``n`` samples; each decoding step runs only
    the rows that have not emitted EOS yet. ``micro_batch_size`` bounds the sequences (prompts x n) per call;
    <= 0 means one call. With group keys (see :mod:`gspo.rollout.seeded`) sampling is seeded per response, so the
    result does not depend on micro-batching or on which rank generated it.

    Under FSDP2 the ranks decode different numbers of steps (sequences stop early) and some have no prompts at
    all, which per-layer all-gathers in every forward cannot survive. So :meth:`resume_memory` all-gathers the
    policy's parameters once for the whole generation phase (every rank takes part) and keeps them unsharded,
    in FSDP's parameter dtype (bf16 on CUDA), through any number of forwards; :meth:`release_memory` frees them
    before the trainer's forward passes. Between the two the weights cost one unsharded copy per rank; outside,
    nothing.
    """

    seeded_per_response = True

    def __init__(self, model: PreTrainedModel, *, pad_token_id: int, eos_token_ids: list[int],
                 micro_batch_size: int = 0, autocast_dtype: torch.dtype | None = None,
                 weights_dtype: torch.dtype | None = None):
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_ids = list(eos_token_ids)
        self.micro_batch_size = micro_batch_size
        self.autocast_dtype = autocast_dtype
        self._sharded_modules = [m for m in model.modules() if isinstance(m, FSDPModule)]  # same order on every rank
        # weights_dtype: what generation reads the weights in (FSDP's all-gather dtype); default the parameters'.
        # fp32 sampling and fp32 training compute the same log-probs (up to KV-cache float noise).
        weights_dtype = weights_dtype or next(model.parameters()).dtype
        self.log_probs_match_trainer = autocast_dtype is None and weights_dtype == torch.float32

    def update_weights(self, weights: Weights) -> None:
        """Nothing to copy: generation reads the policy's own parameters (the iterator is left unread, so no
        rank all-gathers anything)."""

    def release_memory(self) -> None:
        """Before the trainer's forward passes, under FSDP: free the unsharded parameters (every rank; no
        communication) and let the transformer blocks reshard after each forward again (FSDP2's default; the root
        keeps its parameters from forward to backward)."""
        for module in self._sharded_modules:
            module.reshard()
            module.set_reshard_after_forward(module is not self.model, recurse=False)

    def resume_memory(self) -> None:
        """Before generating, under FSDP: all-gather every parameter once and keep it until
        :meth:`release_memory` (collective: every rank, also one with nothing to generate). A no-op while
        already gathered, and on one process."""
        for module in self._sharded_modules:
            module.set_reshard_after_forward(False, recurse=False)
        for module in self._sharded_modules:
            module.unshard()

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 group_keys: torch.Tensor | None = None, return_log_probs: bool = False) -> Generation:
        if return_log_probs and (group_keys is None or not params.do_sample):
            raise ValueError("return_log_probs needs seeded sampling (group_keys and do_sample=True)")
        sample_keys = None if group_keys is None else response_keys(group_keys, params.n)
        prompts_per_call = len(prompts)
        if self.micro_batch_size > 0:
            prompts_per_call = max(1, self.micro_batch_size // params.n)
        was_training = self.model.training
        self.model.eval()
        try:
            chunks = [self._generate_chunk(prompts[i:i + prompts_per_call], params,
                                           None if sample_keys is None
                                           else sample_keys[i * params.n:(i + prompts_per_call) * params.n],
                                           return_log_probs)
                      for i in range(0, len(prompts), prompts_per_call)]
        finally:
            self.model.train(was_training)
        return _concat(chunks, self.pad_token_id)

    def _generate_chunk(self, prompts: list[list[int]], params: SamplingParams,
                        sample_keys: torch.Tensor | None, return_log_probs: bool) -> Generation:
        device = next(self.model.parameters()).device
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_token_id)
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        autocast = (torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        with autocast:
            response_ids, log_probs = self._decode(prompt_ids, prompt_mask, params, sample_keys)
        response_mask = response_mask_from_ids(response_ids, self.eos_token_ids)
        response_ids = response_ids.masked_fill(response_mask == 0, self.pad_token_id)
        return Generation(prompt_ids=prompt_ids.repeat_interleave(params.n, dim=0),
                          prompt_mask=prompt_mask.repeat_interleave(params.n, dim=0),
                          response_ids=response_ids, response_mask=response_mask,
                          log_probs=log_probs * response_mask if return_log_probs else None)

    def _decode(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: SamplingParams,
                sample_keys: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B*n, R) response ids (pad after EOS) and (B*n, R) log-probs of the drawn tokens, R <= max_new_tokens.

        Every sampling knob is explicit: a checkpoint's generation_config (e.g. Qwen's top_k=20,
        repetition_penalty=1.05) must not silently change the policy we compute log-probs for.
        """
        n, device = params.n, prompt_ids.device
        num_rows, max_new = prompt_ids.shape[0] * n, params.max_new_tokens
        draw = dict(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                    do_sample=params.do_sample)
        eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=device)
        cache = DynamicCache(config=self.model.config)
        cache_arg = {cache_keyword(self.model): cache}
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                            use_cache=True, logits_to_keep=1, **cache_arg).logits[:, -1]
        cache.batch_repeat_interleave(n)  # the n samples of a prompt share its prefill
        logits = logits.repeat_interleave(n, dim=0)  # (B*n, V)
        mask = prompt_mask.repeat_interleave(n, dim=0)
        next_position = positions[:, -1].repeat_interleave(n) + 1
        rows = torch.arange(num_rows, device=device)  # original row of each active row
        response_ids = torch.full((num_rows, max_new), self.pad_token_id, dtype=torch.long, device=device)
        log_probs = torch.zeros((num_rows, max_new), device=device)
        width = 0
        all_keys = None if sample_keys is None else sample_keys.to(device)
        # One set of noise buffers for the whole decode: active rows use its first rows, no per-token allocation.
        noise = GumbelNoise(logits.shape[-1], num_rows, device) if all_keys is not None and params.do_sample else None
        for step in range(max_new):
            keys = None if all_keys is None else all_keys[rows]
            tokens, token_log_probs = draw_tokens(logits, keys=keys, position=step, noise=noise, **draw)
            response_ids[rows, step], log_probs[rows, step] = tokens, token_log_probs
            width = step + 1
            active = ~torch.isin(tokens, eos)
            if step + 1 == max_new or not active.any():
                break
            if not active.all():  # finished rows leave the batch: no more compute for them
                keep = active.nonzero()[:, 0]
                cache.batch_select_indices(keep)
                rows, mask, next_position, tokens = rows[keep], mask[keep], next_position[keep], tokens[keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            logits = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position[:, None],
                                use_cache=True, **cache_arg).logits[:, -1]
            next_position = next_position + 1
        return response_ids[:, :width], log_probs[:, :width]


def _concat(chunks: list[Generation], pad_id: int) -> Generation:
    return Generation(
        prompt_ids=pad_cat([c.prompt_ids for c in chunks], pad_id, left=True),
        prompt_mask=pad_cat([c.prompt_mask for c in chunks], 0, left=True),
        response_ids=pad_cat([c.response_ids for c in chunks], pad_id, left=False),
        response_mask=pad_cat([c.response_mask for c in chunks], 0.0, left=False),
        log_probs=None if chunks[0].log_probs is None else pad_cat([c.log_probs for c in chunks], 0.0, left=False),
    )


def build_hf_engine(spec: EngineSpec) -> HFRolloutEngine:
    """``rollout.name=hf``: generates with the policy itself (``spec.policy()``, FSDP2-sharded under torchrun).
    ``rollout.dtype`` auto = bf16 on CUDA, fp32 on CPU: autocast on one process; under FSDP the gathered
    parameters are already in it (FSDP's bf16 on CUDA), and a lower precision asked for is autocast over them."""
    name = spec.rollout.dtype
    on_cuda = spec.device.type == "cuda"
    dtype = (torch.bfloat16 if on_cuda else None) if name == "auto" else _DTYPES[name]
    policy = spec.policy()
    if spec.world_size == 1:
        return HFRolloutEngine(policy, pad_token_id=spec.pad_token_id, eos_token_ids=spec.eos_token_ids,
                               micro_batch_size=spec.rollout.micro_batch_size, autocast_dtype=dtype)
    gathered_dtype = torch.bfloat16 if on_cuda else torch.float32  # FSDP's parameter dtype (trainer.parallel)
    if dtype is None and gathered_dtype != torch.float32:
        raise ConfigError(f"{spec.key('dtype')}={name}: with {spec.world_size} processes the hf engine generates "
                          f"with FSDP's all-gathered bfloat16 parameters; use auto or bfloat16, or "
                          f"{spec.key('name')}=vllm")
    return HFRolloutEngine(policy, pad_token_id=spec.pad_token_id, eos_token_ids=spec.eos_token_ids,
                           micro_batch_size=spec.rollout.micro_batch_size,
                           autocast_dtype=None if dtype in (None, gathered_dtype) else dtype,
                           weights_dtype=gathered_dtype)
