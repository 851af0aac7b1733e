"""Aggregation of a per-token loss matrix into the scalar that is differentiated.

The mode decides how tokens and sequences are weighted, which matters for
GSPO (Zheng et al. 2025, arXiv:2507.18071, Sec. 4.1: a length-normalised
sequence objective averaged over the group) and for Dr. GRPO (Liu et al. 2025,
arXiv:2503.20783: a constant normaliser instead of the response length).

Modes (``M`` = mask, ``T`` = ``loss_mat.shape[-1]``, rows with ``sum_t M = 0``
are "empty" and are not counted as sequences):

``token-mean``
    ``sum_{i,t} l*M / N_tok`` with ``N_tok = sum_{i,t} M``. Every token weighs
    the same, so long sequences weigh more (DAPO).
``seq-mean-token-sum``
    ``sum_i (sum_t l*M) / N_seq``: mean over non-empty sequences of the per-
    sequence token sum.
``seq-mean-token-mean``
    ``sum_i (sum_t l*M / sum_t M) / N_seq``: mean over non-empty sequences of
    the per-sequence token mean (GRPO, GSPO).
``seq-mean-token-sum-norm``
    ``sum_{i,t} l*M / (N_seq * L)`` with ``L = max_response_len`` or, when that
    is not given, ``T``. This is Dr. GRPO's constant normaliser: the weight of
    a token does not depend on the length of its response. With dynamic
    padding ``T`` varies between batches, so pass the generation budget as
    ``max_response_len`` if the constant must really be constant.

Global counts: ``global_num_tokens`` (token-mean) and ``global_num_seqs``
(the three seq-* modes) replace ``N_tok`` / ``N_seq``. A caller that splits a
batch into micro-batches (gradient accumulation) or data-parallel shards and
passes the full batch's counts to every piece gets losses whose SUM equals the
full-batch loss, so the summed gradient is the full-batch gradient. (A
data-parallel wrapper that AVERAGES gradients over ``W`` ranks, such as DDP,
additionally needs the loss multiplied by ``W``.) For
``seq-mean-token-sum-norm`` the pieces must also share ``L``. The count of
the mode not in use is ignored. All denominators are clamped at >= 1, so an
all-masked batch yields 0, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import torch

from .masked import masked_sum

__all__ = ["LOSS_AGG_MODES", "agg_loss", "check_loss_agg_mode"]

Count = Union[int, float, torch.Tensor, None]


def _denominator(local: torch.Tensor, override: Count) -> torch.Tensor:
    if override is None:
        return local.clamp(min=1.0)
    value = torch.as_tensor(override, dtype=local.dtype, device=local.device)
    return value.clamp(min=1.0)


def _token_mean(loss_mat, mask, *, global_num_tokens, global_num_seqs, max_response_len):
    return masked_sum(loss_mat, mask) / _denominator(mask.sum(), global_num_tokens)


def _seq_counts(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tokens_per_seq = mask.sum(dim=-1)
    return tokens_per_seq, (tokens_per_seq > 0).to(mask.dtype).sum()


def _seq_mean_token_sum(loss_mat, mask, *, global_num_tokens, global_num_seqs, max_response_len):
    _, num_seqs = _seq_counts(mask)
    # Empty rows have a token sum of exactly 0, so only the denominator must skip them.
    return masked_sum(loss_mat, mask) / _denominator(num_seqs, global_num_seqs)


def _seq_mean_token_mean(loss_mat, mask, *, global_num_tokens, global_num_seqs, max_response_len):
    tokens_per_seq, num_seqs = _seq_counts(mask)
    seq_means = masked_sum(loss_mat, mask, dim=-1) / tokens_per_seq.clamp(min=1.0)
    return seq_means.sum() / _denominator(num_seqs, global_num_seqs)


def _seq_mean_token_sum_norm(loss_mat, mask, *, global_num_tokens, global_num_seqs, max_response_len):
    _, num_seqs = _seq_counts(mask)
    length = loss_mat.shape[-1] if max_response_len is None else max_response_len
    if length <= 0:
        raise ValueError(f"max_response_len must be positive, got {length}")
    return masked_sum(loss_mat, mask) / (_denominator(num_seqs, global_num_seqs) * length)


_AGG_FNS: dict[str, Callable[..., torch.Tensor]] = {
    "token-mean": _token_mean,
    "seq-mean-token-sum": _seq_mean_token_sum,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
}

LOSS_AGG_MODES: tuple[str, ...] = tuple(_AGG_FNS)


def check_loss_agg_mode(loss_agg_mode: str) -> None:
    """Raise ValueError naming the valid modes if ``loss_agg_mode`` is unknown."""
    if loss_agg_mode not in _AGG_FNS:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; choose one of {list(LOSS_AGG_MODES)}")


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str,
    *,
    global_num_tokens: Count = None,
    global_num_seqs: Count = None,
    max_response_len: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss to a scalar (see the module docstring for the modes).

    Args:
        loss_mat: (B, T) floating per-token loss.
        loss_mask: (B, T) 0/1 mask (float or bool) of response tokens.
        loss_agg_mode: one of ``LOSS_AGG_MODES``.
        global_num_tokens: replaces the local token count (``token-mean``).
        global_num_seqs: replaces the local count of non-empty sequences (seq-* modes).
        max_response_len: the constant ``L`` of ``seq-mean-token-sum-norm``;
            defaults to ``T``. Ignored by the other modes.

    Returns:
        0-dim tensor with ``loss_mat``'s dtype, differentiable w.r.t. ``loss_mat``.

    >>> import torch
    >>> agg_loss(torch.tensor([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]), "token-mean")
    tensor(3.)
    """
    check_loss_agg_mode(loss_agg_mode)
    if loss_mat.dim() != 2 or loss_mat.shape != loss_mask.shape:
        raise ValueError(
            f"loss_mat and loss_mask must both be (batch, response_len); got {tuple(loss_mat.shape)} "
            f"and {tuple(loss_mask.shape)}"
        )
    mask = loss_mask.to(dtype=loss_mat.dtype, device=loss_mat.device)
    return _AGG_FNS[loss_agg_mode](
        loss_mat,
        mask,
        global_num_tokens=global_num_tokens,
        global_num_seqs=global_num_seqs,
        max_response_len=max_response_len,
    )
