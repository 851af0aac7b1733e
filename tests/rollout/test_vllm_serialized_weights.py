"""The weight update of a vLLM engine in a process of its own (beside a rollout pool): the policy's tensors cross as
one safetensors blob and load through the worker's reload_weights. vLLM itself runs in tests_vllm/."""

from __future__ import annotations

import torch

from gspo.rollout.vllm_engine import _serialized
from gspo.rollout.vllm_worker import SerializedWeightsLoader


class _Worker(SerializedWeightsLoader):
    """vLLM's worker as far as the extension uses it."""

    def __init__(self):
        self.loaded: list[tuple[str, torch.Tensor]] = []

    def reload_weights(self, weights_iterator):
        self.loaded = list(weights_iterator)


def test_tied_and_strided_tensors_cross_under_every_name():
    embed = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    strided = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # not contiguous
    weights = [("model.embed_tokens.weight", embed), ("lm_head.weight", embed), ("w", strided),
               ("half", torch.ones(2, dtype=torch.bfloat16))]
    worker = _Worker()
    assert worker.load_serialized_weights(_serialized(iter(weights))) == 4
    loaded = dict(worker.loaded)
    assert set(loaded) == {name for name, _ in weights}
    for name, tensor in weights:
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
