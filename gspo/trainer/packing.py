"""Token-budget micro-batching: pack sequences by length, then cut the all-padding columns off each micro-batch.

``pack_by_tokens`` decides which rows share a forward/backward pass; ``trim_padding`` drops the prompt columns
that are left padding in every row and the response columns that are right padding in every row. Together they
bound the work (and activation memory) of a micro-batch by a token budget instead of a row count, without
changing any number the update computes: losses use mini-batch-global denominators, and positions come from the
attention mask, so neither depends on which rows share a micro-batch or on how wide its padding is.

The budget counts a group as rows x its longest real length (prompt + response tokens). After trimming, the
tensor width is the longest prompt plus the longest response of the group, which can exceed the longest real
length when those come from different rows, by at most the prompt-length spread of the group.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from gspo.trainer.batch import RolloutBatch

__all__ = ["pack_by_tokens", "pack_micro_batches", "sequence_lengths", "trim_padding"]


def _greedy_runs(order: list[int], lengths: list[int], cap: int) -> list[list[int]]:
    """Cut ``order`` (longest first) into consecutive runs whose padded size, rows x the run's first (longest)
    length, is <= ``cap``; a run always takes its first row, even one longer than ``cap``."""
    runs: list[list[int]] = []
    for i in order:
        if runs and (len(runs[-1]) + 1) * max(lengths[runs[-1][0]], 1) <= cap:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def pack_by_tokens(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Row-index groups (micro-batches) of at most ``max_tokens`` tokens each, counted as padded: the number of rows
    times the longest length in the group, which bounds the sum of the real lengths too.

    Micro-batches here are padded rectangles (no remove-padding kernels), so their memory and compute follow rows x
    the longest row, not the real-token sum: a budget on real tokens alone would let one long sequence plus many
    short ones make a rectangle several times the budget. Sequences are sorted by length, longest first (ties by
    index, so the result is deterministic), and cut into consecutive runs: the fewest runs a greedy fill under
    ``max_tokens`` needs, then re-cut under the smallest cap that still gives that many runs, so the largest
    micro-batch is as small as it can be (balanced). Consecutive runs of the sorted order keep similar lengths
    together, which is what keeps padding low (an interleaving balancer, e.g. Karmarkar-Karp on real tokens, pairs
    long with short rows and pads the short ones to the long width).

    A single sequence longer than ``max_tokens`` gets a micro-batch of its own (it cannot be split); every other
    group fits the budget. Each index appears exactly once; indices inside a group are ascending, groups come
    longest first.

    >>> pack_by_tokens([5, 1, 3, 2, 4, 5], 12)
    [[0, 5], [2, 4], [1, 3]]
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if any(length < 0 for length in lengths):
        raise ValueError("lengths must be >= 0")
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    num_runs = len(_greedy_runs(order, lengths, max_tokens))
    # The greedy run count never grows with the cap (a suffix of a run fits wherever the run fits), so
    # binary-search the smallest cap that keeps num_runs.
    low, high = max(1, min(max(lengths), max_tokens)), max_tokens
    while low < high:
        mid = (low + high) // 2
        if len(_greedy_runs(order, lengths, mid)) <= num_runs:
            high = mid
        else:
            low = mid + 1
    return [sorted(run) for run in _greedy_runs(order, lengths, low)]


def sequence_lengths(batch: RolloutBatch) -> list[int]:
    """Real tokens per row: prompt tokens plus response tokens (the attention-mask sum)."""
    return (batch.prompt_mask.sum(-1) + batch.response_mask.sum(-1).long()).tolist()


def trim_padding(batch: RolloutBatch) -> RolloutBatch:
    """The same rows without the all-padding columns: leading prompt columns that are padding in every row (prompts
    are left-padded) and trailing response columns that are padding in every row (responses are right-padded).

    At least one prompt column is kept (the last prompt position predicts the first response token) and at least one
    response column. ``model_inputs()`` derives positions from the attention mask, so they do not change.
    """
    prompt_used = batch.prompt_mask.any(0).nonzero()
    response_used = batch.response_mask.bool().any(0).nonzero()
    prompt_width = batch.prompt_mask.shape[1]
    start = min(int(prompt_used[0]), prompt_width - 1) if len(prompt_used) else prompt_width - 1
    stop = max(int(response_used[-1]) + 1, 1) if len(response_used) else 1
    if start == 0 and stop == batch.response_mask.shape[1]:
        return batch
    trimmed = {}
    for f in fields(batch):
        value, side = getattr(batch, f.name), f.metadata.get("pad")
        if value is None or side is None:
            continue
        trimmed[f.name] = value[:, start:] if side == "left" else value[:, :stop]
    return replace(batch, **trimmed)


def pack_micro_batches(batch: RolloutBatch, max_tokens: int) -> list[tuple[torch.Tensor, RolloutBatch]]:
    """(row indices, trimmed micro-batch) per group of ``pack_by_tokens`` over the real sequence lengths."""
    device = batch.response_ids.device
    out = []
    for group in pack_by_tokens(sequence_lengths(batch), max_tokens):
        index = torch.tensor(group, dtype=torch.long, device=device)
        out.append((index, trim_padding(batch.select(index))))
    return out
