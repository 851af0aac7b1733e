"""Rollout with HF transformers ``generate`` (KV cache), in micro-batches, on the policy being trained."""

from __future__ import annotations

import contextlib

import torch
from transformers import PreTrainedModel

from gspo.rollout.base import Generation, SamplingParams, left_pad, pad_cat, response_mask_from_ids
from gspo.rollout.seeded import SeededSampler


class HFRolloutEngine:
    """Generates with ``model`` (the policy itself, or its unsharded rollout copy under FSDP).

    ``micro_batch_size`` bounds the sequences (prompts x n) per ``generate`` call; <= 0 means one call.
    With ``sample_keys`` (one int64 per response, see :mod:`gspo.rollout.seeded`) sampling is seeded per
    response, so the result does not depend on micro-batching or on which rank generated it.
    """

    def __init__(self, model: PreTrainedModel, *, pad_token_id: int, eos_token_ids: list[int],
                 micro_batch_size: int = 0, autocast_dtype: torch.dtype | None = None):
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_ids = list(eos_token_ids)
        self.micro_batch_size = micro_batch_size
        self.autocast_dtype = autocast_dtype

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 sample_keys: torch.Tensor | None = None, return_log_probs: bool = False) -> Generation:
        if return_log_probs and (sample_keys is None or not params.do_sample):
            raise ValueError("return_log_probs needs seeded sampling (sample_keys and do_sample=True)")
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
        # Every sampling knob is explicit: a checkpoint's generation_config (e.g. Qwen's top_k=20,
        # repetition_penalty=1.05) must not silently change the policy we compute log-probs for.
        knobs = dict(do_sample=params.do_sample, repetition_penalty=1.0, num_return_sequences=params.n,
                     max_new_tokens=params.max_new_tokens, min_new_tokens=0, pad_token_id=self.pad_token_id,
                     eos_token_id=self.eos_token_ids)
        sampler = None
        if params.do_sample and sample_keys is not None:  # greedy decoding over seeded Gumbel-perturbed logits
            # HF's greedy mode has no num_return_sequences; expanding the prompts is what it does internally.
            prompt_ids = prompt_ids.repeat_interleave(params.n, dim=0)
            prompt_mask = prompt_mask.repeat_interleave(params.n, dim=0)
            sampler = SeededSampler(sample_keys, prompt_ids.shape[1], temperature=params.temperature,
                                    top_k=params.top_k, top_p=params.top_p, record_log_probs=return_log_probs)
            knobs.update(do_sample=False, num_return_sequences=1, logits_processor=[sampler])
        elif params.do_sample:
            knobs.update(temperature=params.temperature, top_p=params.top_p,
                         top_k=params.top_k if params.top_k > 0 else 0)
        autocast = (torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        with autocast:
            output = self.model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **knobs)
        response_ids = output[:, prompt_ids.shape[1]:]  # (b*n, r)
        response_mask = response_mask_from_ids(response_ids, self.eos_token_ids)
        response_ids = response_ids.masked_fill(response_mask == 0, self.pad_token_id)
        log_probs = None
        if return_log_probs:
            log_probs = sampler.sampled_log_probs()[:, :response_ids.shape[1]].to(response_mask.device) * response_mask
        copies = params.n if prompt_ids.shape[0] < response_ids.shape[0] else 1
        return Generation(prompt_ids=prompt_ids.repeat_interleave(copies, dim=0),
                          prompt_mask=prompt_mask.repeat_interleave(copies, dim=0),
                          response_ids=response_ids, response_mask=response_mask, log_probs=log_probs)


def _concat(chunks: list[Generation], pad_id: int) -> Generation:
    return Generation(
        prompt_ids=pad_cat([c.prompt_ids for c in chunks], pad_id, left=True),
        prompt_mask=pad_cat([c.prompt_mask for c in chunks], 0, left=True),
        response_ids=pad_cat([c.response_ids for c in chunks], pad_id, left=False),
        response_mask=pad_cat([c.response_mask for c in chunks], 0.0, left=False),
        log_probs=None if chunks[0].log_probs is None else pad_cat([c.log_probs for c in chunks], 0.0, left=False),
    )
