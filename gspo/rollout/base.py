"""The rollout engine interface: prompts in, n sampled responses per prompt out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: disabled
    do_sample: bool = True
    max_new_tokens: int = 16


@dataclass
class Generation:
    """Responses grouped by prompt: rows ``[i*n, (i+1)*n)`` answer prompt ``i``.

    Shapes: N = num_prompts * n sequences, P = longest prompt, R = longest response.
    """

    prompt_ids: torch.Tensor  # (N, P) int64, left-padded
    prompt_mask: torch.Tensor  # (N, P) int64, 1 on real prompt tokens
    response_ids: torch.Tensor  # (N, R) int64, right-padded
    response_mask: torch.Tensor  # (N, R) float32, 1 on generated tokens up to and including EOS
    log_probs: torch.Tensor | None = None  # (N, R) float32, the sampler's log-probs (0 at padding), if asked

    @property
    def response_lengths(self) -> torch.Tensor:  # (N,) int64, tokens incl. EOS
        return self.response_mask.sum(-1).long()


Weights = Iterable[tuple[str, torch.Tensor]]  # (HF parameter name, full tensor), consumed once, in order


@runtime_checkable
class RolloutEngine(Protocol):
    """What the trainer, validation and ``gspo eval`` use of a rollout engine; built by name from the registry
    (:mod:`gspo.rollout.registry`). Checkpoints and exports never touch an engine.

    Attributes:
        eos_token_ids: tokens that end a response (the response mask covers up to and including the first).
        seeded_per_response: a response depends only on (its group key, its index, token position), never on
            the batch it ran in, its micro-batching or its rank (so results do not change with the world size).
        log_probs_match_trainer: ``Generation.log_probs`` equal a trainer forward pass up to float noise
            (same weights, same precision, whole-vocabulary softmax at the temperature), so they may stand in
            for the old policy's log-probs; otherwise the trainer recomputes them and logs the mismatch.
    """

    eos_token_ids: list[int]
    seeded_per_response: bool
    log_probs_match_trainer: bool

    def generate(self, prompts: list[list[int]], params: SamplingParams, group_keys: torch.Tensor | None = None,
                 return_log_probs: bool = False) -> Generation:
        """Sample ``params.n`` responses for each prompt (token ids, unpadded). ``group_keys`` (G,) int64 in
        [0, 2^32), one per prompt (:func:`gspo.rollout.seeded.group_keys`), seed the sampling; None: unseeded.
        ``return_log_probs`` fills ``Generation.log_probs`` with the sampled tokens' log-probs at the
        temperature."""
        ...

    def update_weights(self, weights: Weights) -> None:
        """Load the policy's new weights; called after an update changed them (and before the next generation),
        never otherwise. Read every item: under FSDP each one is an all-gather every rank takes part in (an engine
        that generates with the policy module itself may return without reading)."""
        ...

    def release_memory(self) -> None:
        """Before the trainer's first forward pass of a step (old log-probs, reference, optimizer steps): free what
        generation holds (KV cache, weights copies) if the engine can, so no trainer pass shares the device with
        it. Idempotent: a no-op while released."""
        ...

    def resume_memory(self) -> None:
        """Before generating again, after the update (and after :meth:`update_weights` when the weights changed,
        which may wake only what loading the weights needs). Idempotent: a no-op while resumed."""
        ...


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_ids: list[int]) -> torch.Tensor:
    """(N, R) float mask covering tokens up to and including the first EOS (all tokens when none).

    >>> response_mask_from_ids(torch.tensor([[5, 2, 0], [5, 6, 7]]), [2]).tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    """
    is_eos = torch.isin(response_ids, torch.tensor(eos_token_ids, device=response_ids.device))
    # Count EOS tokens strictly before each position: a token is kept while none came before it.
    eos_before = torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()
    return (eos_before == 0).float()


def pad_cat(tensors: list[torch.Tensor], value: float, *, left: bool) -> torch.Tensor:
    """Concatenate (b_i, L_i, ...) tensors along dim 0, padding dim 1 to the longest on the left or right."""
    length = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        extra = [0, 0] * (t.dim() - 2) + ([length - t.shape[1], 0] if left else [0, length - t.shape[1]])
        padded.append(torch.nn.functional.pad(t, extra, value=value))
    return torch.cat(padded)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (B, L) ids and a 0/1 attention mask."""
    length = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, length - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, length - len(seq):] = 1
    return ids, mask
