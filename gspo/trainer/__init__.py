"""The training loop that composes data, rollout, rewards and the algorithm layer."""

from gspo.trainer.batch import RolloutBatch
from gspo.trainer.dynamic_sampling import DynamicSamplingError
from gspo.trainer.signals import TrainingInterrupted
from gspo.trainer.trainer import Trainer

__all__ = ["DynamicSamplingError", "RolloutBatch", "Trainer", "TrainingInterrupted"]
