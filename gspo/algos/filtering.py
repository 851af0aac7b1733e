"""DAPO dynamic sampling: which prompt groups are informative, which failed, which changed.

DAPO (Yu et al. 2025, arXiv:2503.14476, Sec. 3.2) over-samples and keeps only
groups with ``0 < accuracy < 1``: a group with zero variance has zero
group-relative advantage for every member and so contributes no gradient
while still diluting the batch. As in verl, a group is *informative* (kept)
when the POPULATION std of its metric is above a float tolerance, or when it
has a single member (nothing to compare against, so never dropped).

The same tolerance decides whether a value "scores like" a recorded one
(:func:`changed_row_mask`), and a response *solves* its prompt when its
accuracy is > 0 (:func:`failed_group_mask`). The group filter, the prefilter
and its probes all use these definitions and no other.
"""

from __future__ import annotations

import torch

from ._groups import GroupStats, as_float_values, group_stats

__all__ = [
    "SAME_VALUE_TOLERANCE",
    "changed_row_mask",
    "failed_group_mask",
    "informative_group_mask",
    "informative_row_mask",
]

SAME_VALUE_TOLERANCE = 1e-6
"""Values closer than this count as equal. It stops float noise from keeping an all-equal group:
``[0.1 + 0.2, 0.3]`` differ by one ulp and have std ~3e-17, which must count as 0."""


def _informative(stats: GroupStats, tolerance: float) -> torch.Tensor:
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    return (stats.std(unbiased=False) > tolerance) | (stats.counts == 1)


def informative_group_mask(
    metric_values: torch.Tensor, group_ids: torch.Tensor, *, tolerance: float = SAME_VALUE_TOLERANCE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group DAPO keep decision.

    Args:
        metric_values: (B,) metric per response (e.g. score or accuracy).
        group_ids: (B,) group id per response; groups need not be contiguous.
        tolerance: a group is informative when its population std (``unbiased=False``)
            is ``> tolerance``. A group whose values are exactly equal has std
            exactly 0, so ``tolerance=0.0`` gives a strict ``std > 0`` test.

    Returns:
        ``(unique_ids, informative)``: (G,) sorted distinct ids and (G,) bool.
    """
    stats = group_stats(as_float_values(metric_values), group_ids)
    return stats.unique_ids, _informative(stats, tolerance)


def informative_row_mask(
    metric_values: torch.Tensor, group_ids: torch.Tensor, *, tolerance: float = SAME_VALUE_TOLERANCE
) -> torch.Tensor:
    """(B,) bool: True on the rows of informative groups (the rows DAPO keeps).

    Same arguments and rule as :func:`informative_group_mask`, broadcast to members.

    >>> import torch
    >>> informative_row_mask(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5]), torch.tensor([0, 0, 1, 1, 2]))
    tensor([False, False,  True,  True,  True])
    """
    stats = group_stats(as_float_values(metric_values), group_ids)
    return _informative(stats, tolerance)[stats.inverse]


def failed_group_mask(accuracy: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group "no response solved the prompt": a response solves it when its accuracy is > 0.

    Args:
        accuracy: (B,) accuracy per response (0/1, or a partial credit in [0, 1]).
        group_ids: (B,) group id per response.

    Returns:
        ``(unique_ids, failed)``: (G,) sorted distinct ids and (G,) bool.

    >>> failed_group_mask(torch.tensor([0.0, 0.0, 0.0, 1.0]), torch.tensor([4, 4, 7, 7]))
    (tensor([4, 7]), tensor([ True, False]))
    """
    stats = group_stats(as_float_values(accuracy), group_ids)
    return stats.unique_ids, ~(stats.max > 0)


def changed_row_mask(
    metric_values: torch.Tensor,
    reference: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    tolerance: float = SAME_VALUE_TOLERANCE,
) -> torch.Tensor:
    """(B,) bool: True on every row of a group in which some value differs from its row's ``reference`` by more
    than ``tolerance`` (e.g. a probe that scores unlike its prompt's last all-equal group).

    Args:
        metric_values: (B,) metric per response.
        reference: (B,) the value each row is compared with.
        group_ids: (B,) group id per response.

    >>> changed_row_mask(torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 0.0, 0.0]),
    ...                  torch.tensor([3, 3, 5, 5]))
    tensor([False, False,  True,  True])
    """
    values = as_float_values(metric_values)
    differs = ((values - reference.to(values)).abs() > tolerance).to(values.dtype)
    stats = group_stats(differs, group_ids)
    return (stats.max > 0)[stats.inverse]
