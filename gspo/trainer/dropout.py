"""Dropout off in every forward the trainer runs (rollout, old policy, reference, update), as TRL does for RL.

Why: with dropout the update's forward is a different function from the one that sampled the responses. With the
weights unchanged, GPT-2 / OPT's dropout 0.1 already spreads the sequence importance ratio over 0.98-1.02, and
GSPO's clip range of 3e-4 / 4e-4 then clips on noise alone. The rollout, old-policy and reference passes run in
eval mode; the update runs in train mode (activation checkpointing needs it), so zeroing the probabilities is what
makes all four the same function. ``actor_rollout_ref.model.disable_dropout=false`` keeps the checkpoint's dropout
in the update.

HF models apply dropout through ``nn.Dropout`` modules and through float attributes read at forward time
(``self.attention_dropout``, OPT's ``self.dropout``, ``layerdrop``); both are zeroed. The model's config is left as
it was, so an exported ``final_model`` keeps the checkpoint's dropout settings for later fine-tuning.
"""

from __future__ import annotations

import torch

DROPOUT_ATTRIBUTES = ("dropout", "attention_dropout", "activation_dropout", "attn_dropout", "resid_dropout",
                      "hidden_dropout", "embd_dropout", "layerdrop", "dropout_rate", "attn_pdrop", "resid_pdrop")


def disable_dropout(model: torch.nn.Module) -> int:
    """Zero every dropout probability in ``model`` in place; returns how many were non-zero."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            changed += module.p != 0
            module.p = 0.0
        for name in DROPOUT_ATTRIBUTES:
            value = getattr(module, name, None)
            if isinstance(value, float) and not isinstance(value, bool):
                changed += value != 0
                setattr(module, name, 0.0)
    return changed
