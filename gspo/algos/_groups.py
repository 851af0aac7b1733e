"""Vectorised per-group statistics shared by advantages.py and filtering.py."""

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
        constant: (G,) bool, True where every member has exactly the same value.
    """

    unique_ids: torch.Tensor
    inverse: torch.Tensor
    counts: torch.Tensor
    mean: torch.Tensor
    sq_dev_sum: torch.Tensor
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
    return GroupStats(unique_ids, inverse, counts, mean, sq_dev_sum, vmax == vmin)
