"""Engine memory in the order a device needs it: no forward pass of the trainer (old log-probs, reference, the
optimizer steps) runs while the rollout engine holds its memory, and the engine gets it back only to generate."""

from __future__ import annotations

from gspo.rollout import EngineSpec, HFRolloutEngine, register_rollout_engine
from gspo.trainer import Trainer


class RecordingEngine:
    """The hf engine, recording each call in a log the test shares with the model's forward hooks; its log-probs
    are not taken for the trainer's, so every step runs the old-log-prob pass."""

    seeded_per_response = True
    log_probs_match_trainer = False

    def __init__(self, spec: EngineSpec):
        self.inner = HFRolloutEngine(spec.policy(), pad_token_id=spec.pad_token_id, eos_token_ids=spec.eos_token_ids)
        self.eos_token_ids = self.inner.eos_token_ids
        self.log: list[str] = []
        self.holds_memory = True  # built resumed, as the engines are
        self.generating = False

    def generate(self, prompts, params, group_keys=None, return_log_probs=False):
        self.log.append("generate")
        self.generating = True
        try:
            return self.inner.generate(prompts, params, group_keys, return_log_probs)
        finally:
            self.generating = False

    def update_weights(self, weights) -> None:
        self.log.append("update_weights")

    def release_memory(self) -> None:
        self.log.append("release_memory")
        self.holds_memory = False

    def resume_memory(self) -> None:
        self.log.append("resume_memory")
        self.holds_memory = True


register_rollout_engine("recording", RecordingEngine)


def _record_trainer_forwards(trainer: Trainer) -> None:
    """Log every forward of the policy and the reference outside generation, with whether the engine held its
    memory then."""
    engine = trainer.engine

    def hook(name: str):
        def record(module, args, kwargs):
            if not engine.generating:
                engine.log.append(f"{name} forward, engine {'holds' if engine.holds_memory else 'released'}")
        return record

    trainer.model.register_forward_pre_hook(hook("policy"), with_kwargs=True)
    trainer.policy_update.context.reference_model.register_forward_pre_hook(hook("reference"), with_kwargs=True)


def _collapsed(log: list[str]) -> list[str]:
    """The log with runs of one entry written once (a pass is many micro-batch forwards)."""
    return [entry for i, entry in enumerate(log) if i == 0 or log[i - 1] != entry]


def test_no_trainer_forward_runs_while_the_engine_holds_its_memory(make_config):
    trainer = Trainer(make_config("actor_rollout_ref.rollout.name=recording",
                                  "actor_rollout_ref.actor.use_kl_loss=true", "algorithm.filter_groups.enable=false",
                                  "trainer.total_training_steps=2", "trainer.test_freq=2"))
    assert not trainer.policy_update.context.use_rollout_log_probs  # the old-log-prob pass runs
    _record_trainer_forwards(trainer)
    trainer.fit()
    log = trainer.engine.log
    assert not [entry for entry in log if entry.endswith("engine holds")]
    step = ["release_memory", "policy forward, engine released", "reference forward, engine released",
            "policy forward, engine released"]  # old log-probs, reference, the optimizer steps
    generate_with_new_weights = ["update_weights", "resume_memory", "generate"]
    assert _collapsed(log) == (["resume_memory", "generate"] + step + generate_with_new_weights + step
                               + generate_with_new_weights)  # the last step's validation
