"""Response logits with each prompt encoded once for all its sampled responses.

The n responses of a group share their prompt. Encoding the prompt once and attending to its KV cache from every
response gives the same logits as n full forward passes (float noise aside); under autograd the gradient of the
shared prompt computation is the sum over its responses, as with separate copies. With prompts of length P and
responses of length R this cuts the tokens a forward and backward pass processes from n(P + R) to P + nR per
group.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

from gspo.model.loading import cache_keyword
from gspo.trainer.batch import RolloutBatch


def full_sequence_logits(model: PreTrainedModel, batch: RolloutBatch) -> list[torch.Tensor]:
    """[(N, R, V)] logits predicting each response token, from one forward pass over prompt + response."""
    response_len = batch.response_ids.shape[1]
    return [model(**batch.model_inputs(), use_cache=False, logits_to_keep=response_len + 1).logits[:, :-1]]


def _prompt_rows(batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of each distinct group (G,), each row's group position (N,))."""
    _, inverse = torch.unique(batch.group_ids, return_inverse=True)
    first_row = torch.full((int(inverse.max()) + 1,), batch.num_sequences, device=inverse.device)
    first_row = first_row.scatter_reduce(0, inverse, torch.arange(batch.num_sequences, device=inverse.device), "amin")
    return first_row, inverse


def shared_prompt_logits(model: PreTrainedModel, batch: RolloutBatch, *, always_two_passes: bool = False
                         ) -> list[torch.Tensor]:
    """Logits predicting each response token, each distinct prompt (by group id) encoded once: a list of pieces
    along the response dimension, [(N, 1, V), (N, R-1, V)] (only the first when R = 1 and not
    ``always_two_passes``), so the full (N, R, V) tensor is never built by a copy.

    Rows may come in any order (length packing reorders them). Token t of a response is predicted by the prompt's
    last position (t = 0) or by response token t - 1 attending to the prompt's cache and earlier response tokens.
    ``always_two_passes``: run the response pass even for one-token responses (its output unused), so every FSDP
    rank runs the same number of forward passes.
    """
    first_row, inverse = _prompt_rows(batch)  # (G,), (N,) row -> its prompt
    prompt_ids, prompt_mask = batch.prompt_ids[first_row], batch.prompt_mask[first_row]  # (G, P)
    cache = DynamicCache(config=model.config)
    cache_arg = cache_keyword(model)
    prompt_out = model(input_ids=prompt_ids, attention_mask=prompt_mask,
                       position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1,
                       **{cache_arg: cache})
    first_logits = prompt_out.logits[:, -1:][inverse]  # (N, 1, V): predicts response token 0
    response_len = batch.response_ids.shape[1]
    if response_len == 1 and not always_two_passes:
        return [first_logits]
    # Each response row gets its prompt's keys / values: an index, so gradients add up over the group (and the
    # cache keeps its per-layer state, e.g. a sliding window's length).
    cache.batch_select_indices(inverse)
    width = max(response_len - 1, 1)  # a one-token response still feeds its token (then drops the output)
    inputs = batch.response_ids[:, :width]  # (N, R-1): token t predicts token t+1
    attention_mask = torch.cat([batch.prompt_mask, batch.response_mask[:, :width].long()], dim=1)
    prompt_lengths = batch.prompt_mask.sum(-1, keepdim=True)  # the next position after the prompt
    positions = prompt_lengths + torch.arange(width, device=inputs.device)
    rest = model(input_ids=inputs, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                 **{cache_arg: cache}).logits[:, :response_len - 1]  # (N, R-1, V)
    return [first_logits, rest]  # rest has width 0 for one-token responses: still in the graph, as on every rank


def can_share_prompts(model: PreTrainedModel, batch: RolloutBatch, *, uniform: bool = False) -> bool:
    """Worth it and possible: rows of a group carry the same prompt, some group has several rows, and the model
    runs with a KV cache in this mode (HF turns the cache off under activation checkpointing in training).

    ``uniform`` (FSDP): decide from the model alone, the same on every rank, so all ranks run the same passes;
    rows of a group always share their prompt in batches built by the trainer.
    """
    if batch.num_sequences == 0 or (model.training and _activation_checkpointing(model)):
        return False
    if uniform:
        return True
    first_row, inverse = _prompt_rows(batch)
    same_prompt = torch.equal(batch.prompt_ids[first_row][inverse], batch.prompt_ids) and \
        torch.equal(batch.prompt_mask[first_row][inverse], batch.prompt_mask)
    return same_prompt and first_row.numel() < batch.num_sequences


def _activation_checkpointing(model: PreTrainedModel) -> bool:
    flag = getattr(type(model), "is_activation_checkpointing", None)  # transformers 5 name
    return bool(model.is_activation_checkpointing if flag is not None else getattr(model, "is_gradient_checkpointing",
                                                                                      False))
