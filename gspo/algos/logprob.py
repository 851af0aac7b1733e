"""Token log-probabilities and entropies from logits, at least float32 precision.

Both functions avoid a full ``log_softmax`` copy of the logits: the log-prob
of the label is ``logit[label] - logsumexp(logit)``, so only a (N,) result
per row is produced. ``bf16``/``fp16`` logits are upcast to float32 (a
float32 logsumexp over a large vocabulary is what makes the ratio
``exp(log_prob - old_log_prob)`` trustworthy); float64 stays float64.

``chunk_size`` processes the flattened rows ``chunk_size`` at a time, so the
float32 upcast (and, for the entropy, the softmax) exists for one chunk at a
time. That bounds peak memory without autograd (e.g. computing old or
reference log-probs). Under autograd the backward of ``logsumexp`` keeps its
input, so for low-precision logits the float32 copies of all chunks are
still saved.

``checkpointing`` (entropy only, verl's ``entropy_checkpointing``): under autograd each chunk's softmax is not
kept for the backward but recomputed there, so the entropy bonus's gradient costs no (N, R, V) float32 tensor
held from forward to backward.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["log_probs_from_logits", "entropy_from_logits"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _chunked(
    fn: Callable[..., torch.Tensor], chunk_size: int | None, rows: int, *tensors: torch.Tensor
) -> torch.Tensor:
    if chunk_size is None or chunk_size >= rows:
        return fn(*tensors)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    pieces = [fn(*(t[start : start + chunk_size] for t in tensors)) for start in range(0, rows, chunk_size)]
    return torch.cat(pieces, dim=0)


def _label_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.to(_compute_dtype(logits.dtype))
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.to(_compute_dtype(logits.dtype))
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def log_probs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, *, chunk_size: int | None = None
) -> torch.Tensor:
    """``log softmax(logits)[label] = logits[label] - logsumexp(logits)``, in nats.

    Args:
        logits: (..., V) unnormalised scores, any floating dtype.
        labels: (...) int64 token ids in ``[0, V)``.
        chunk_size: optional number of flattened rows per chunk (see module docstring).

    Returns:
        (...) log-probabilities in float32 (float64 for float64 logits).

    >>> import torch
    >>> log_probs_from_logits(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
    tensor([-0.6931])
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"labels {tuple(labels.shape)} must match logits {tuple(logits.shape)} without the last dim")
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_labels = labels.reshape(-1).long()
    out = _chunked(_label_log_probs, chunk_size, flat_logits.shape[0], flat_logits, flat_labels)
    return out.reshape(labels.shape)


def entropy_from_logits(
    logits: torch.Tensor, *, chunk_size: int | None = None, checkpointing: bool = False
) -> torch.Tensor:
    """Entropy of ``softmax(logits)``: ``logsumexp(z) - sum_v softmax(z)_v z_v``, in nats.

    Args:
        logits: (..., V) unnormalised scores.
        chunk_size: optional number of flattened rows per chunk.
        checkpointing: recompute each chunk in backward instead of saving its softmax (see module docstring);
            same values and gradients.

    Returns:
        (...) entropies in float32 (float64 for float64 logits).
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    entropy = _entropy
    if checkpointing and torch.is_grad_enabled() and logits.requires_grad:
        entropy = partial(checkpoint, _entropy, use_reentrant=False)
    out = _chunked(entropy, chunk_size, flat_logits.shape[0], flat_logits)
    return out.reshape(logits.shape[:-1])
