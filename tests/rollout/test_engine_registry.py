"""The engine seam: an engine registered from outside the package trains; unknown names fail naming the key."""

from __future__ import annotations

import json

import pytest
import torch

from gspo.config import ConfigError
from gspo.rollout import (
    EngineSpec,
    Generation,
    RolloutEngine,
    SamplingParams,
    left_pad,
    register_rollout_engine,
    response_mask_from_ids,
    rollout_engine_factory,
    rollout_engine_names,
)
from gspo.trainer import Trainer


class GenerateEngine:
    """A minimal outside engine: transformers' own ``generate`` (global RNG, so not seeded per response), whose
    log-probs are not taken for the trainer's (so the trainer recomputes them and logs the mismatch)."""

    seeded_per_response = False
    log_probs_match_trainer = False

    def __init__(self, spec: EngineSpec):
        self.model, self.pad_token_id, self.eos_token_ids = spec.policy(), spec.pad_token_id, spec.eos_token_ids
        self.calls = {"update_weights": 0, "release_memory": 0, "resume_memory": 0}

    @torch.no_grad()
    def generate(self, prompts, params: SamplingParams, group_keys=None, return_log_probs=False) -> Generation:
        ids, mask = left_pad(prompts, self.pad_token_id)
        out = self.model.generate(ids, attention_mask=mask, do_sample=params.do_sample, top_k=None,
                                  temperature=params.temperature if params.do_sample else None,
                                  num_return_sequences=params.n, max_new_tokens=params.max_new_tokens,
                                  eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id,
                                  return_dict_in_generate=True, output_logits=True)
        response = out.sequences[:, ids.shape[1]:]
        response_mask = response_mask_from_ids(response, self.eos_token_ids)
        logits = torch.stack(out.logits, dim=1).float() / (params.temperature if params.do_sample else 1.0)
        log_probs = torch.log_softmax(logits, -1).gather(-1, response[..., None])[..., 0] * response_mask
        return Generation(prompt_ids=ids.repeat_interleave(params.n, 0),
                          prompt_mask=mask.repeat_interleave(params.n, 0),
                          response_ids=response.masked_fill(response_mask == 0, self.pad_token_id),
                          response_mask=response_mask, log_probs=log_probs if return_log_probs else None)

    def update_weights(self, weights) -> None:
        self.calls["update_weights"] += 1  # generates with the policy module itself: nothing to copy

    def release_memory(self) -> None:
        self.calls["release_memory"] += 1

    def resume_memory(self) -> None:
        self.calls["resume_memory"] += 1


register_rollout_engine("hf_generate", GenerateEngine)


def test_an_engine_registered_outside_the_package_trains(make_config, tmp_path):
    assert {"hf", "vllm", "hf_generate"} <= set(rollout_engine_names())
    cfg = make_config("actor_rollout_ref.rollout.name=hf_generate", "trainer.total_training_steps=3",
                      "trainer.val_before_train=true", "trainer.test_freq=3", "algorithm.filter_groups.enable=false")
    trainer = Trainer(cfg)
    assert isinstance(trainer.engine, GenerateEngine) and isinstance(trainer.engine, RolloutEngine)
    assert not trainer.policy_update.context.use_rollout_log_probs  # the engine's log-probs are not the trainer's
    trainer.fit()
    # One weight update per optimizer update that changed the policy, each before the next generation (the third
    # before the validation after the last step); none at the start.
    assert trainer.engine.calls["update_weights"] == 3 and trainer.engine.calls["release_memory"] == 3
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if row["step"] > 0]
    assert len(steps) == 3 and "val/acc_mean" in rows[0]
    # Its log-probs are not used as the old policy's: every row recomputed, the mismatch logged (fp32 on both
    # sides of the same model: float noise).
    assert all("timing/old_log_prob" in row and row["training/rollout_probs_diff_max"] < 1e-4 for row in steps)
    assert all(0 <= row["training/rollout_seq_log_ratio_diff_mean"] < 1e-4 for row in steps)
    assert (tmp_path / "run" / "final_model" / "model.safetensors").is_file()


def test_unknown_engine_fails_naming_the_key_and_the_choices(make_config):
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.rollout\.name: unknown rollout engine 'vlm'.*'vllm'"):
        Trainer(make_config("actor_rollout_ref.rollout.name=vlm"))
    with pytest.raises(ConfigError, match="engine: unknown"):
        rollout_engine_factory("nope", key="engine")
    with pytest.raises(ValueError, match="already registered"):
        register_rollout_engine("hf", GenerateEngine)


@pytest.mark.parametrize("level", ["token", "sequence", "geometric"])
def test_rollout_correction_weights_the_loss(make_config, level):
    # Same engine, same samples: pi_old / pi_rollout = 1 up to float noise, so the weights are 1 and never truncated.
    cfg = make_config("actor_rollout_ref.rollout.name=hf_generate", "algorithm.filter_groups.enable=false",
                      f"algorithm.rollout_correction.rollout_is={level}", "trainer.total_training_steps=1")
    trainer = Trainer(cfg)
    metrics = trainer.train_step()
    assert metrics["rollout_corr/rollout_is_mean"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["rollout_corr/rollout_is_truncated_frac"] == 0.0
    assert metrics["training/rollout_probs_diff_mean"] < 1e-4


def test_the_hf_engine_on_cpu_keeps_using_its_own_log_probs(make_config):
    trainer = Trainer(make_config("algorithm.filter_groups.enable=false", "trainer.total_training_steps=1"))
    assert trainer.policy_update.context.use_rollout_log_probs and trainer.engine.log_probs_match_trainer
    metrics = trainer.train_step()
    assert "timing/old_log_prob" not in metrics and "training/rollout_probs_diff_mean" not in metrics
    # Rollout correction needs recomputed old log-probs: it switches the auto setting off.
    corrected = Trainer(make_config("algorithm.rollout_correction.rollout_is=token"))
    assert not corrected.policy_update.context.use_rollout_log_probs
