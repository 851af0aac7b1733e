"""DAPO dynamic sampling: drop prompt groups whose responses all score the same.

DAPO (Yu et al. 2025, arXiv:2503.14476, Sec. 3.2) over-samples and keeps only
groups with ``0 < accuracy < 1``: a group with zero variance has zero
group-relative advantage for every member and so contributes no gradient
while still diluting the batch. As in verl, a group is kept when the
POPULATION std of its metric is positive, or when it has a single member
(nothing to compare against, so never dropped).
"""

from __future__ import annotations

import torch

from ._groups import GroupStats, as_float_values, group_stats

__all__ = ["group_keep_mask", "informative_rows_mask"]


def _keep_groups(stats: GroupStats, tolerance: float) -> torch.Tensor:
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    return (stats.std(unbiased=False) > tolerance) | (stats.counts == 1)


def group_keep_mask(
    metric_values: torch.Tensor, group_ids: torch.Tensor, *, tolerance: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group DAPO keep decision.

    Args:
        metric_values: (B,) metric per response (e.g. score or accuracy).
        group_ids: (B,) group id per response; groups need not be contiguous.
        tolerance: a group is kept when its population std (``unbiased=False``)
            is ``> tolerance``. The tolerance stops float noise from keeping
            an all-equal group: ``[0.1 + 0.2, 0.3]`` differ by one ulp and
            have std ~3e-17, which must count as 0. A group whose values are
            exactly equal has std exactly 0, so ``tolerance=0.0`` gives a
            strict ``std > 0`` test.

    Returns:
        ``(unique_ids, keep)``: (G,) sorted distinct ids and (G,) bool.
    """
    stats = group_stats(as_float_values(metric_values), group_ids)
    return stats.unique_ids, _keep_groups(stats, tolerance)


def informative_rows_mask(
    metric_values: torch.Tensor, group_ids: torch.Tensor, *, tolerance: float = 1e-6
) -> torch.Tensor:
    """(B,) bool keep-mask of the responses whose group survives DAPO filtering (True = keep the row).

    Same arguments and rule as ``group_keep_mask``, broadcast to members.

    >>> import torch
    >>> informative_rows_mask(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5]), torch.tensor([0, 0, 1, 1, 2]))
    tensor([False, False,  True,  True,  True])
    """
    stats = group_stats(as_float_values(metric_values), group_ids)
    return _keep_groups(stats, tolerance)[stats.inverse]
