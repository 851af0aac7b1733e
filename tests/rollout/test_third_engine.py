"""A third rollout engine, registered from outside the package with a key of its own, reaches everything that reads
engine settings: `gspo config`, load-time validation, the trainer, `gspo eval` and the resume check."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from gspo.config import ConfigError, load_config
from gspo.config.rollout import compose_rollout_config
from gspo.config_docs import format_keys
from gspo.errors import require
from gspo.evaluate import evaluate, parse_eval_args
from gspo.rollout import (
    EngineContext,
    EngineDefinition,
    EngineSpec,
    HFRolloutEngine,
    register_rollout_engine,
    rollout_engine_definition,
)
from gspo.trainer import Trainer
from gspo.trainer.resume import may_change

BUILT: list[SlicedEngine] = []


@dataclass
class SlicedOptions:
    # Prompts one forward batch of the sliced engine holds at most.
    prompts_per_slice: int = 4


def check_sliced(rollout, context: EngineContext) -> None:
    require(rollout.prompts_per_slice >= 1, context.key("prompts_per_slice"), "must be >= 1")


class SlicedEngine:
    """The hf engine, decoding ``prompts_per_slice`` prompts at a time; records how many prompts each call got."""

    seeded_per_response = True

    def __init__(self, spec: EngineSpec):
        self.inner = HFRolloutEngine(spec.policy(), pad_token_id=spec.pad_token_id, eos_token_ids=spec.eos_token_ids)
        self.prompts_per_slice = spec.rollout.prompts_per_slice
        self.eos_token_ids = self.inner.eos_token_ids
        self.log_probs_match_trainer = self.inner.log_probs_match_trainer
        self.prompts_per_call: list[int] = []
        BUILT.append(self)

    def generate(self, prompts, params, group_keys=None, return_log_probs=False):
        self.prompts_per_call.append(len(prompts))
        self.inner.micro_batch_size = self.prompts_per_slice * params.n
        return self.inner.generate(prompts, params, group_keys, return_log_probs)

    def update_weights(self, weights) -> None:
        self.inner.update_weights(weights)  # generates with the policy itself: nothing to copy

    def release_memory(self) -> None:
        self.inner.release_memory()

    def resume_memory(self) -> None:
        self.inner.resume_memory()


register_rollout_engine("sliced", SlicedEngine, options=SlicedOptions, check=check_sliced,
                        may_change_on_resume=("prompts_per_slice",), schedules_own_batches=True)


def test_its_key_is_listed_typed_and_documented():
    assert "actor_rollout_ref.rollout.prompts_per_slice  int = 4\n" in format_keys("prompts_per_slice")
    assert "(sliced) Prompts one forward batch of the sliced engine holds at most." in format_keys("prompts_per_slice")


def test_its_key_is_checked_and_refused_by_other_engines():
    cfg = load_config(None, ["actor_rollout_ref.rollout.name=sliced", "actor_rollout_ref.rollout.prompts_per_slice=2"])
    assert cfg.actor_rollout_ref.rollout.prompts_per_slice == 2
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.rollout\.prompts_per_slice: must be >= 1"):
        load_config(None, ["actor_rollout_ref.rollout.name=sliced", "actor_rollout_ref.rollout.prompts_per_slice=0"])
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.rollout\.prompts_per_slice: is read by the sliced "
                                          r"engine only \(actor_rollout_ref\.rollout\.name='hf'\)"):
        load_config(None, ["actor_rollout_ref.rollout.prompts_per_slice=2"])
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.rollout\.prompts_per_slice: cannot take 'many'"):
        load_config(None, ["actor_rollout_ref.rollout.name=sliced", "actor_rollout_ref.rollout.prompts_per_slice=many"])
    assert may_change("actor_rollout_ref.rollout.prompts_per_slice")


def test_it_trains_and_evaluates(make_config, tmp_path, addition_files):
    cfg = make_config("actor_rollout_ref.rollout.name=sliced", "actor_rollout_ref.rollout.prompts_per_slice=3",
                      "algorithm.filter_groups.enable=false", "trainer.total_training_steps=2")
    trainer = Trainer(cfg)
    assert isinstance(trainer.engine, SlicedEngine) and trainer.engine.prompts_per_slice == 3
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if row["step"] > 0] == [1, 2]

    # gspo eval takes the engine's key bare, and hands the engine every prompt at once (it schedules its own batches).
    settings = parse_eval_args(["engine=sliced", "prompts_per_slice=2", "batch_size=3", "max_prompt_length=16",
                                "max_response_length=4", f"output_dir={tmp_path / 'eval'}"])
    summary = evaluate(str(tmp_path / "run" / "final_model"), [str(addition_files[1])], settings)
    engine = BUILT[-1]
    assert engine.prompts_per_slice == 2 and engine.prompts_per_call == [8] and summary["num_prompts"] == 8
    with pytest.raises(ConfigError, match=r"^prompts_per_slice: must be >= 1"):
        parse_eval_args(["engine=sliced", "prompts_per_slice=0"])
    with pytest.raises(ConfigError, match=r"^prompts_per_slice: is read by the sliced engine only \(engine='hf'\); "
                                          r"drop it or set engine=sliced"):
        parse_eval_args(["prompts_per_slice=2"])


def test_declarations_that_cannot_compose_are_refused_naming_the_engine():
    sliced = rollout_engine_definition("sliced")

    @dataclass
    class Shadowing:
        n: int = 2  # a key every engine shares

    @dataclass
    class OtherDefault:
        prompts_per_slice: int = 8

    with pytest.raises(TypeError, match="'shadow': its option 'n' is a key every engine shares"):
        compose_rollout_config([EngineDefinition("shadow", SlicedEngine, options=Shadowing)])
    with pytest.raises(TypeError, match="'other': its option 'prompts_per_slice' is declared by 'sliced' with another"):
        compose_rollout_config([sliced, EngineDefinition("other", SlicedEngine, options=OtherDefault)])
    shared = compose_rollout_config([sliced, EngineDefinition("twin", SlicedEngine, options=SlicedOptions)])
    assert shared.ENGINE_KEYS == {"prompts_per_slice": ("sliced", "twin")} and shared().prompts_per_slice == 4
    with pytest.raises(TypeError, match=r"'bad': may_change_on_resume names \['speed'\]"):
        EngineDefinition("bad", SlicedEngine, options=SlicedOptions, may_change_on_resume=("speed",))
    with pytest.raises(ValueError, match="'sliced' is already registered"):
        register_rollout_engine("sliced", SlicedEngine)  # the same name with another declaration
