"""Vectorised per-group bookkeeping shared by advantages.py, filtering.py and the dynamic-sampling loop.

A group is the set of rows (responses) that share a group id (their prompt); ids need not be contiguous or sorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GroupStats:
    """Per-group statistics of a (B,) tensor of values.

    Attributes:
        unique_ids: (G,) sorted distinct group ids.
        inverse: (B,) int64 index of each element's group in ``unique_ids``.
        counts: (G,) members per group.
        mean: (G,) group mean.
        sq_dev_sum: (G,) sum of squared deviations from the group mean.
        max: (G,) largest value of the group.
        constant: (G,) bool, True where every member has exactly the same value.
    """

    unique_ids: torch.Tensor
    inverse: torch.Tensor
    counts: torch.Tensor
    mean: torch.Tensor
    sq_dev_sum: torch.Tensor
    max: torch.Tensor
    constant: torch.Tensor

    def std(self, unbiased: bool) -> torch.Tensor:
        """(G,) standard deviation; the unbiased one divides by ``max(1, n - 1)``.

        Exactly 0 for a constant group, even where rounding of the mean left a
        tiny nonzero deviation.
        """
        n = self.counts.to(self.mean.dtype)
        denom = (n - 1.0).clamp(min=1.0) if unbiased else n
        std = torch.sqrt(self.sq_dev_sum / denom)
        return torch.where(self.constant, torch.zeros_like(std), std)


def as_float_values(values: torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(values)
    return values if values.is_floating_point() else values.to(torch.get_default_dtype())


def group_stats(values: torch.Tensor, group_ids: torch.Tensor) -> GroupStats:
    """Group ``values`` (B,) by ``group_ids`` (B,), which need not be contiguous or sorted."""
    group_ids = torch.as_tensor(group_ids, device=values.device)
    if values.dim() != 1 or group_ids.shape != values.shape:
        raise ValueError(
            f"values and group_ids must both be 1-D of equal length; got {tuple(values.shape)} "
            f"and {tuple(group_ids.shape)}"
        )
    unique_ids, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    num_groups = unique_ids.numel()
    zeros = values.new_zeros(num_groups)
    mean = zeros.index_add(0, inverse, values) / counts.to(values.dtype)
    # Two-pass variance: E[x^2] - E[x]^2 cancels catastrophically for near-equal values.
    dev = values - mean[inverse]
    sq_dev_sum = zeros.index_add(0, inverse, dev * dev)
    vmax = zeros.scatter_reduce(0, inverse, values, reduce="amax", include_self=False)
    vmin = zeros.scatter_reduce(0, inverse, values, reduce="amin", include_self=False)
    return GroupStats(unique_ids, inverse, counts, mean, sq_dev_sum, vmax, vmax == vmin)


def count_groups(group_ids: torch.Tensor) -> int:
    """Number of distinct ids in ``group_ids`` (B,); 0 for an empty tensor."""
    return int(torch.unique(group_ids).numel())


def _appearance_rank(group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((G,) rank of each sorted distinct id by its first row, (B,) index of each row's id among them)."""
    unique, inverse = torch.unique(group_ids, return_inverse=True)
    rows = torch.arange(group_ids.numel(), device=group_ids.device)
    first_row = torch.full((unique.numel(),), group_ids.numel(), dtype=torch.long, device=group_ids.device)
    first_row.scatter_reduce_(0, inverse, rows, reduce="amin")
    rank = torch.empty_like(first_row)
    rank[first_row.argsort()] = torch.arange(unique.numel(), device=group_ids.device)
    return rank, inverse


def groups_in_order(group_ids: torch.Tensor) -> torch.Tensor:
    """(G,) the distinct ids of ``group_ids`` (B,) in order of first appearance.

    >>> groups_in_order(torch.tensor([5, 5, 2, 9, 2]))
    tensor([5, 2, 9])
    """
    rank, inverse = _appearance_rank(group_ids)
    ordered = torch.empty_like(group_ids[: rank.numel()])
    ordered[rank[inverse]] = group_ids
    return ordered


def rows_of_first_groups(group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(B,) bool: the rows of the first ``num_groups`` groups to appear in ``group_ids`` (B,)."""
    rank, inverse = _appearance_rank(group_ids)
    return rank[inverse] < num_groups


def contiguous_row_order(group_ids: torch.Tensor) -> torch.Tensor:
    """(B,) int64 permutation that makes each group's rows contiguous: groups in order of first appearance, the rows
    of a group in their order.

    >>> contiguous_row_order(torch.tensor([5, 2, 5, 2]))
    tensor([0, 2, 1, 3])
    """
    rank, inverse = _appearance_rank(group_ids)
    return torch.sort(rank[inverse], stable=True).indices


def relabel_groups(group_ids: torch.Tensor, new_ids: torch.Tensor) -> torch.Tensor:
    """(B,) ``group_ids`` (B,) with its groups, in order of first appearance, renamed to ``new_ids`` (G,).

    >>> relabel_groups(torch.tensor([8, 8, 3]), torch.tensor([0, 1]))
    tensor([0, 0, 1])
    """
    rank, inverse = _appearance_rank(group_ids)
    if new_ids.numel() != rank.numel():
        raise ValueError(f"new_ids has {new_ids.numel()} ids for {rank.numel()} groups")
    return new_ids.to(group_ids.device)[rank[inverse]]
