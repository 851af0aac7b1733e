"""Loaded into vLLM's worker (``worker_extension_cls``) when the engine runs in a process of its own.

A rank beside a rollout pool cannot host vLLM in-process (vLLM would build its process groups over the whole
torchrun world, which the other pool never joins), so its engine core and worker run in a child process, and the
policy's weights cross to it as one safetensors blob per update (:meth:`load_serialized_weights`, reached through
``LLM.collective_rpc``). This module must stay importable without the rest of gspo's start-up cost.
"""

from __future__ import annotations


class SerializedWeightsLoader:
    """Mixed into vLLM's worker class: the methods a :class:`~gspo.rollout.vllm_engine.VLLMRolloutEngine` calls
    across the process boundary."""

    def load_serialized_weights(self, blob: bytes) -> int:
        """Load ``blob`` (``safetensors.torch.save`` of ``{name: tensor}`` in the checkpoint's names) in place,
        through the worker's own ``reload_weights``; returns the number of tensors loaded."""
        from safetensors.torch import load

        weights = load(blob)
        self.reload_weights(weights_iterator=iter(weights.items()))
        return len(weights)
