"""Pure tensor algorithms for GSPO / GRPO / DAPO post-training (torch only, no I/O).

Depends on nothing but torch and the standard library, so it can be tested
and reused without the rest of ``gspo``.
"""

from ._groups import contiguous_row_order, count_groups, groups_in_order, relabel_groups, rows_of_first_groups
from .advantages import ADV_ESTIMATORS, compute_grpo_advantages
from .aggregation import LOSS_AGG_MODES, agg_loss, check_loss_agg_mode
from .filtering import (
    SAME_VALUE_TOLERANCE,
    changed_row_mask,
    failed_group_mask,
    informative_group_mask,
    informative_row_mask,
)
from .kl import KL_TYPES, kl_penalty
from .logprob import entropy_from_logits, log_probs_from_logits
from .losses import (
    POLICY_LOSSES,
    PolicyLossFn,
    RegisteredLoss,
    compute_policy_loss,
    compute_policy_loss_gspo,
    compute_policy_loss_vanilla,
    get_policy_loss_fn,
    register_policy_loss,
)
from .masked import masked_mean, masked_sum
from .rollout_correction import (
    BEHAVIOUR_WEIGHT_SUMS,
    MISMATCH_SUMS,
    ROLLOUT_IS_LEVELS,
    behaviour_weight_metrics_from_sums,
    behaviour_weight_sums,
    behaviour_weights,
    importance_weight_metrics,
    importance_weight_metrics_from_sums,
    importance_weight_sums,
    mismatch_metrics_from_sums,
    rollout_importance_weights,
    rollout_mismatch_metrics,
    rollout_mismatch_sums,
)

__all__ = [
    "MISMATCH_SUMS",
    "ADV_ESTIMATORS",
    "KL_TYPES",
    "LOSS_AGG_MODES",
    "POLICY_LOSSES",
    "PolicyLossFn",
    "RegisteredLoss",
    "ROLLOUT_IS_LEVELS",
    "BEHAVIOUR_WEIGHT_SUMS",
    "behaviour_weight_metrics_from_sums",
    "behaviour_weight_sums",
    "behaviour_weights",
    "SAME_VALUE_TOLERANCE",
    "agg_loss",
    "changed_row_mask",
    "check_loss_agg_mode",
    "compute_grpo_advantages",
    "compute_policy_loss",
    "compute_policy_loss_gspo",
    "compute_policy_loss_vanilla",
    "contiguous_row_order",
    "count_groups",
    "entropy_from_logits",
    "failed_group_mask",
    "get_policy_loss_fn",
    "groups_in_order",
    "informative_group_mask",
    "informative_row_mask",
    "importance_weight_metrics",
    "importance_weight_metrics_from_sums",
    "importance_weight_sums",
    "kl_penalty",
    "log_probs_from_logits",
    "masked_mean",
    "masked_sum",
    "mismatch_metrics_from_sums",
    "register_policy_loss",
    "relabel_groups",
    "rollout_importance_weights",
    "rollout_mismatch_metrics",
    "rollout_mismatch_sums",
    "rows_of_first_groups",
]
