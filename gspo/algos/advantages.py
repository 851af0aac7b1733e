"""Group-relative outcome advantages (GRPO; Shao et al. 2024, arXiv:2402.03300).

GSPO (arXiv:2507.18071, Sec. 4.1) uses the same group-normalised advantage.
"""

from __future__ import annotations

import torch

from ._groups import as_float_values, group_stats

__all__ = ["ADV_ESTIMATORS", "compute_grpo_advantages"]


def compute_grpo_advantages(
    scores: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    norm_adv_by_std: bool = True,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """Per-sequence advantage ``(r_i - mean_g) / (std_g + epsilon)``.

    Args:
        scores: (B,) scalar reward per response (integers are cast to the default float dtype).
        group_ids: (B,) id of each response's prompt group (int64 or any dtype
            ``torch.unique`` accepts); groups need not be contiguous.
        norm_adv_by_std: False gives ``r_i - mean_g`` (Dr. GRPO, arXiv:2503.20783).
        epsilon: added to the std so a zero-variance group does not divide by 0.

    ``std_g`` is the UNBIASED sample std (``torch.std``'s default). A group
    of one has no baseline: it gets mean 0 and std 1, so its advantage is
    ``r_i / (1 + epsilon)`` (the raw score up to epsilon), as in verl. A
    group whose scores are all exactly equal gets advantage exactly 0 (no
    float noise from the mean).

    Returns:
        (B,) advantages in ``scores``' floating dtype; no gradient is meant to flow.

    >>> import torch
    >>> compute_grpo_advantages(torch.tensor([1.0, 0.0, 3.0]), torch.tensor([7, 7, 9]), norm_adv_by_std=False)
    tensor([ 0.5000, -0.5000,  3.0000])
    """
    scores = as_float_values(scores)
    stats = group_stats(scores, group_ids)
    singleton = stats.counts == 1
    mean = torch.where(singleton, torch.zeros_like(stats.mean), stats.mean)
    centered = scores - mean[stats.inverse]
    # sum/n can round away from the common value of an all-equal group; its advantage is exactly 0.
    zero_adv = (stats.constant & ~singleton)[stats.inverse]
    centered = torch.where(zero_adv, torch.zeros_like(centered), centered)
    if not norm_adv_by_std:
        return centered
    std = torch.where(singleton, torch.ones_like(stats.mean), stats.std(unbiased=True))
    return centered / (std[stats.inverse] + epsilon)


# ``algorithm.adv_estimator`` -> function(scores (B,), group_ids (B,), *, norm_adv_by_std) -> advantages (B,).
ADV_ESTIMATORS = {"grpo": compute_grpo_advantages}
