"""Pure tensor algorithms for GSPO / GRPO / DAPO post-training (torch only, no I/O).

Depends on nothing but torch and the standard library, so it can be tested
and reused without the rest of ``gspo``.
"""

from .advantages import ADV_ESTIMATORS, compute_grpo_advantages
from .aggregation import LOSS_AGG_MODES, agg_loss, check_loss_agg_mode
from .filtering import group_keep_mask, informative_rows_mask
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
    ROLLOUT_IS_LEVELS,
    importance_weight_metrics,
    rollout_importance_weights,
    rollout_mismatch_metrics,
)

__all__ = [
    "ADV_ESTIMATORS",
    "KL_TYPES",
    "LOSS_AGG_MODES",
    "POLICY_LOSSES",
    "PolicyLossFn",
    "RegisteredLoss",
    "ROLLOUT_IS_LEVELS",
    "agg_loss",
    "check_loss_agg_mode",
    "compute_grpo_advantages",
    "compute_policy_loss",
    "compute_policy_loss_gspo",
    "compute_policy_loss_vanilla",
    "entropy_from_logits",
    "get_policy_loss_fn",
    "group_keep_mask",
    "informative_rows_mask",
    "importance_weight_metrics",
    "kl_penalty",
    "log_probs_from_logits",
    "masked_mean",
    "masked_sum",
    "register_policy_loss",
    "rollout_importance_weights",
    "rollout_mismatch_metrics",
]
