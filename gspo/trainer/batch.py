"""The typed batch that flows through a training step: generate -> score -> filter -> advantages -> update."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from gspo.rollout import Generation, pad_cat

_LEFT = {"pad": "left"}  # prompt-aligned (N, P) tensors
_RIGHT = {"pad": "right"}  # response-aligned (N, R) tensors


@dataclass
class RolloutBatch:
    """One row per sampled sequence; the n rows of a prompt group are contiguous.

    N sequences, P prompt tokens (left-padded), R response tokens (right-padded).
    """

    prompt_ids: torch.Tensor = field(metadata=_LEFT)  # (N, P) int64
    prompt_mask: torch.Tensor = field(metadata=_LEFT)  # (N, P) int64
    response_ids: torch.Tensor = field(metadata=_RIGHT)  # (N, R) int64
    response_mask: torch.Tensor = field(metadata=_RIGHT)  # (N, R) float32, up to and incl. EOS
    group_ids: torch.Tensor  # (N,) int64, unique per prompt group within a step
    prompt_index: torch.Tensor  # (N,) int64, the prompt's index in its dataset
    generation_step: torch.Tensor | None = None  # (N,) int64, the training step whose policy sampled it
    seq_reward: torch.Tensor | None = None  # (N,) float32, reward function score before shaping
    seq_final_reward: torch.Tensor | None = None  # (N,) float32, after overlong shaping
    acc: torch.Tensor | None = None  # (N,) float32
    advantages: torch.Tensor | None = None  # (N,) float32, one per sequence
    rollout_log_probs: torch.Tensor | None = field(default=None, metadata=_RIGHT)  # (N, R) the sampler's
    old_log_probs: torch.Tensor | None = field(default=None, metadata=_RIGHT)  # (N, R) float32
    ref_log_probs: torch.Tensor | None = field(default=None, metadata=_RIGHT)  # (N, R) float32
    rollout_is_weights: torch.Tensor | None = field(default=None, metadata=_RIGHT)  # (N, R) rollout correction

    @classmethod
    def from_generation(cls, gen: Generation, *, group_ids: torch.Tensor, prompt_index: torch.Tensor,
                        generation_step: int = 0) -> RolloutBatch:
        return cls(prompt_ids=gen.prompt_ids, prompt_mask=gen.prompt_mask, response_ids=gen.response_ids,
                   response_mask=gen.response_mask, group_ids=group_ids, prompt_index=prompt_index,
                   generation_step=torch.full_like(group_ids, generation_step), rollout_log_probs=gen.log_probs)

    @property
    def num_sequences(self) -> int:
        return self.response_ids.shape[0]

    @property
    def response_lengths(self) -> torch.Tensor:  # (N,) int64
        return self.response_mask.sum(-1).long()

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask / position_ids (N, P+R); positions skip left padding."""
        attention_mask = torch.cat([self.prompt_mask, self.response_mask.long()], dim=1)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": torch.cat([self.prompt_ids, self.response_ids], dim=1),
                "attention_mask": attention_mask, "position_ids": position_ids}

    def select(self, index: torch.Tensor) -> RolloutBatch:
        """Rows picked by a bool mask or an index tensor (N,)."""
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)
                                if getattr(self, f.name) is not None})

    def split(self, num_rows: int) -> list[RolloutBatch]:
        """Consecutive chunks of ``num_rows`` sequences (the last may be shorter)."""
        return [self.select(torch.arange(start, min(start + num_rows, self.num_sequences)))
                for start in range(0, self.num_sequences, num_rows)]

    def to(self, device: torch.device) -> RolloutBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if getattr(self, f.name) is not None})

    @staticmethod
    def concat(batches: list[RolloutBatch], pad_token_id: int) -> RolloutBatch:
        """Stack batches of possibly different P and R, re-padding prompts on the left and responses on the right."""
        if len(batches) == 1:
            return batches[0]
        merged = {}
        for f in fields(RolloutBatch):
            values = [getattr(b, f.name) for b in batches]
            if any(v is None for v in values):
                merged[f.name] = None
                continue
            side = f.metadata.get("pad")
            value = pad_token_id if f.name.endswith("_ids") and side else 0
            merged[f.name] = pad_cat(values, value, left=side == "left") if side else torch.cat(values)
        return RolloutBatch(**merged)
