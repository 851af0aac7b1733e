"""The vllm engine's sleep-mode state machine against a stand-in ``vllm.LLM`` (no vLLM needed).

The stand-in keeps vLLM 0.32's rules (``vllm/v1/executor/abstract.py``, ``vllm/v1/engine/core.py``): ``sleep``
puts every tag to sleep and pauses the scheduler, unless the weights already sleep (then it only logs); ``wake_up``
with a tag that is not asleep logs and wakes nothing, not even the other tags named; without tags it wakes all;
the scheduler runs again, and ``wake_up`` returns True, only once no tag sleeps.
"""

from __future__ import annotations

import pytest
import torch

from gspo.rollout.vllm_engine import Memory, VLLMRolloutEngine

TAGS = frozenset(("weights", "kv_cache"))


class StandInLLM:
    """Records every call, and every call vLLM would only log a warning for (``ignored``)."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.ignored: list[tuple] = []
        self.sleeping: set[str] = set()
        self.loaded: list[str] = []

    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))
        if "weights" in self.sleeping:
            self.ignored.append(("sleep", level))
            return
        self.sleeping |= TAGS

    def wake_up(self, tags: list[str] | None = None) -> bool:
        self.calls.append(("wake_up", None if tags is None else tuple(tags)))
        if not self.sleeping or any(tag not in self.sleeping for tag in tags or ()):
            self.ignored.append(self.calls[-1])
        elif tags is None:
            self.sleeping.clear()
        else:
            self.sleeping -= set(tags)
        return not self.sleeping

    def collective_rpc(self, method: str, kwargs: dict) -> None:
        assert "weights" not in self.sleeping, "weights loaded into released memory"
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
    assert vllm.memory is Memory.ASLEEP and llm.sleeping == TAGS
    vllm.update_weights(iter(WEIGHTS))
    assert vllm.memory is Memory.WEIGHTS_AWAKE and llm.sleeping == {"kv_cache"}
    vllm.resume_memory()
    assert vllm.memory is Memory.AWAKE and llm.sleeping == set() and llm.ignored == []
    assert llm.calls == [("sleep", 1), ("wake_up", ("weights",)), ("reload_weights",), ("reset_prefix_cache",),
                         ("wake_up", ("kv_cache",))]
    assert llm.loaded == ["lm_head.weight"]


def test_resuming_without_a_weight_update_wakes_both_tags_in_order():
    vllm, llm = engine()
    vllm.release_memory()
    vllm.resume_memory()
    assert llm.calls == [("sleep", 1), ("wake_up", ("weights",)), ("wake_up", ("kv_cache",))]
    assert vllm.memory is Memory.AWAKE and llm.ignored == []


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


def test_releasing_after_a_weight_update_puts_the_woken_weights_back_to_sleep():
    vllm, llm = engine()
    vllm.release_memory()
    vllm.update_weights(iter(WEIGHTS))
    vllm.release_memory()  # e.g. an update with no generation between: the new weights must not stay on the device
    assert llm.calls[-1] == ("sleep", 1) and llm.sleeping == TAGS and vllm.memory is Memory.ASLEEP
    vllm.resume_memory()
    assert llm.sleeping == set() and llm.ignored == []


def test_an_engine_vllm_leaves_asleep_is_an_error_naming_the_key():
    vllm, llm = engine()
    vllm.release_memory()
    llm.sleeping.add("runtime")  # a tag this engine never names
    with pytest.raises(RuntimeError, match=r"actor_rollout_ref\.rollout\.free_cache_engine=false"):
        vllm.resume_memory()


def test_without_sleep_mode_only_the_weights_move():
    vllm, llm = engine(sleep_mode=False)
    vllm.release_memory()
    vllm.update_weights(iter(WEIGHTS))
    vllm.resume_memory()
    assert llm.calls == [("reload_weights",), ("reset_prefix_cache",)]
    assert vllm.memory is Memory.AWAKE


def test_the_stand_in_wakes_nothing_when_a_named_tag_is_awake():
    # Why each tag is named once: after the weights woke, naming them again leaves the KV cache asleep too.
    _, llm = engine()
    llm.sleep()
    llm.wake_up(["weights"])
    assert llm.wake_up(["weights", "kv_cache"]) is False and llm.sleeping == {"kv_cache"}
