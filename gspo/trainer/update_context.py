"""What the update reads beside the train batch: one frozen record, built once per run.

It travels unchanged from :class:`gspo.trainer.update.PolicyUpdate` through :func:`gspo.trainer.actor.update_policy`
down to each micro-batch's forward pass, so no step of that chain grows a list of loose arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel

from gspo.algos import RegisteredLoss, get_policy_loss_fn
from gspo.config import ActorConfig, RolloutCorrectionConfig
from gspo.distributed import SINGLE_PROCESS, DistContext

if TYPE_CHECKING:
    from gspo.trainer.lora import LoRAPolicy


@dataclass(frozen=True)
class UpdateContext:
    """The policy, its optimizer and the settings of its update; the same for every step of a run."""

    model: PreTrainedModel  # the policy (FSDP2-sharded under torchrun)
    optimizer: torch.optim.Optimizer
    actor: ActorConfig  # actor_rollout_ref.actor
    responses_per_prompt: int  # actor_rollout_ref.rollout.n
    temperature: float  # actor_rollout_ref.rollout.temperature: log-probs of the distribution sampled from
    max_response_length: int  # data.max_response_length, in tokens (seq-mean-token-sum-norm's constant)
    policy_loss: RegisteredLoss | None = None  # None: the registered actor.policy_loss.loss_mode
    autocast_dtype: torch.dtype | None = None  # None: compute in the parameters' dtype (FSDP casts by itself)
    dist: DistContext = SINGLE_PROCESS
    # Around the optimizer steps (gspo.trainer.update): the KL reference, the old-policy rule, rollout correction.
    reference_model: PreTrainedModel | None = None  # a frozen copy; None without the KL loss, or with LoRA
    lora: LoRAPolicy | None = None  # with LoRA the reference is the policy with its adapters switched off
    use_rollout_log_probs: bool = False  # resolved by gspo.trainer.old_policy.choose_rollout_log_probs
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)
    # Beside a rollout pool (mode=async): rows sampled at an earlier step are weighted by the truncated behaviour
    # ratio pi_proximal / pi_sampler, capped here (async_training.behav_imp_weight_cap); None: no such rows.
    behaviour_weight_cap: float | None = None

    @property
    def behaviour_weight_level(self) -> str:
        """The level of the behaviour weight: one per sequence (geometric mean) for GSPO, per token otherwise."""
        return "geometric" if self.actor.policy_loss.loss_mode == "gspo" else "token"

    @property
    def loss(self) -> RegisteredLoss:
        return self.policy_loss or get_policy_loss_fn(self.actor.policy_loss.loss_mode)

    @property
    def mini_batch_rows(self) -> int:
        """Sequences per mini-batch over all ranks: ``ppo_mini_batch_size`` prompts x n."""
        return self.actor.ppo_mini_batch_size * self.responses_per_prompt

    @property
    def local_mini_batch_rows(self) -> int:
        """This rank's sequences per mini-batch (the builder checks that the ranks split it evenly)."""
        return self.mini_batch_rows // self.dist.world_size
