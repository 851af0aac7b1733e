"""The vllm engine's sleep-mode state machine against a stand-in ``vllm.LLM`` (no vLLM needed).

The stand-in keeps vLLM's allocator rules: ``sleep`` releases every block, ``wake_up`` maps the blocks of the tags
it names (all without tags), and mapping a mapped block or releasing a released one is an error, as it is for the
device's virtual memory.
"""

from __future__ import annotations

import pytest
import torch

from gspo.rollout.vllm_engine import Memory, VLLMRolloutEngine

TAGS = ("weights", "kv_cache")


class AllocatorError(RuntimeError):
    pass


class StandInLLM:
    """Records every call; ``mapped`` is the set of tags whose blocks are on the device."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.mapped = set(TAGS)
        self.loaded: list[str] = []

    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))
        if self.mapped != set(TAGS):
            raise AllocatorError(f"sleep releases blocks already released: {sorted(set(TAGS) - self.mapped)}")
        self.mapped.clear()

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(("wake_up", None if tags is None else tuple(tags)))
        for tag in TAGS if tags is None else tags:
            if tag in self.mapped:
                raise AllocatorError(f"wake_up maps the {tag!r} blocks a second time")
            self.mapped.add(tag)

    def collective_rpc(self, method: str, kwargs: dict) -> None:
        if "weights" not in self.mapped:
            raise AllocatorError("weights loaded into unmapped blocks")
        self.calls.append((method,))
        self.loaded = [name for name, _ in kwargs["weights_iterator"]]

    def reset_prefix_cache(self) -> None:
        self.calls.append(("reset_prefix_cache",))


def engine(sleep_mode: bool = True) -> tuple[VLLMRolloutEngine, StandInLLM]:
    llm = StandInLLM()
    return VLLMRolloutEngine(llm, pad_token_id=0, eos_token_ids=[2], sleep_during_update=sleep_mode), llm


WEIGHTS = [("lm_head.weight", torch.ones(2, 2))]


def test_an_update_cycle_wakes_the_weights_then_the_kv_cache_each_once():
    vllm, llm = engine()
    vllm.release_memory()
    assert vllm.memory is Memory.ASLEEP and llm.mapped == set()
    vllm.update_weights(iter(WEIGHTS))
    assert vllm.memory is Memory.WEIGHTS_AWAKE and llm.mapped == {"weights"}
    vllm.resume_memory()
    assert vllm.memory is Memory.AWAKE and llm.mapped == set(TAGS)
    assert llm.calls == [("sleep", 1), ("wake_up", ("weights",)), ("reload_weights",), ("reset_prefix_cache",),
                         ("wake_up", ("kv_cache",))]
    assert llm.loaded == ["lm_head.weight"]


def test_resuming_without_a_weight_update_wakes_both_tags_in_order():
    vllm, llm = engine()
    vllm.release_memory()
    vllm.resume_memory()
    assert llm.calls == [("sleep", 1), ("wake_up", ("weights",)), ("wake_up", ("kv_cache",))]
    assert vllm.memory is Memory.AWAKE


def test_every_call_is_idempotent():
    vllm, llm = engine()
    vllm.resume_memory()  # awake from the start: nothing to map
    vllm.release_memory()
    vllm.release_memory()
    vllm.resume_memory()
    vllm.resume_memory()
    assert llm.calls == [("sleep", 1), ("wake_up", ("weights",)), ("wake_up", ("kv_cache",))]


def test_two_weight_updates_while_asleep_wake_the_weights_once():
    vllm, llm = engine()
    vllm.release_memory()
    vllm.update_weights(iter(WEIGHTS))
    vllm.update_weights(iter(WEIGHTS))
    vllm.resume_memory()
    assert [call for call in llm.calls if call[0] == "wake_up"] == [("wake_up", ("weights",)),
                                                                     ("wake_up", ("kv_cache",))]
    assert llm.calls.count(("reset_prefix_cache",)) == 2  # each update makes the cached prompt KV stale


def test_releasing_after_a_weight_update_maps_the_kv_cache_before_sleeping():
    vllm, llm = engine()
    vllm.release_memory()
    vllm.update_weights(iter(WEIGHTS))
    vllm.release_memory()  # e.g. the run stopped between the update and the next generation
    assert llm.calls[-2:] == [("wake_up", ("kv_cache",)), ("sleep", 1)]
    assert vllm.memory is Memory.ASLEEP and llm.mapped == set()


def test_without_sleep_mode_only_the_weights_move():
    vllm, llm = engine(sleep_mode=False)
    vllm.release_memory()
    vllm.update_weights(iter(WEIGHTS))
    vllm.resume_memory()
    assert llm.calls == [("reload_weights",), ("reset_prefix_cache",)]
    assert vllm.memory is Memory.AWAKE


@pytest.mark.parametrize("tags", [None, ["weights"]])
def test_the_stand_in_refuses_to_map_awake_weights_again(tags):
    # The rule the engine is held to: waking all, or the weights, after the weights woke maps them twice.
    _, llm = engine()
    llm.sleep()
    llm.wake_up(["weights"])
    with pytest.raises(AllocatorError, match="'weights' blocks a second time"):
        llm.wake_up(tags)
