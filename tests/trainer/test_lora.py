"""LoRA (actor_rollout_ref.model.lora_rank > 0): what trains, the reference policy, the exports, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from gspo.algos import ADV_ESTIMATORS
from gspo.config import ConfigError
from gspo.model.loading import load_causal_lm, load_tokenizer
from gspo.trainer import Trainer
from gspo.trainer.actor import compute_log_probs
from gspo.trainer.lora import iter_merged_weights
from tests.presets import ADDITION_PRESET

LORA = ("actor_rollout_ref.model.lora_rank=4", "actor_rollout_ref.model.lora_alpha=8")
# The tiny test model (conftest): hidden 32, intermediate 64, 4 query heads / 2 key-value heads of size 8, 2 layers.
# Rank-4 adapters on every linear layer but the LM head hold r x (in + out) parameters each:
# q 4(32+32)=256, k 4(32+16)=192, v 192, o 256, gate 4(32+64)=384, up 384, down 4(64+32)=384 -> 2048 per layer.
ADAPTER_PARAMS = 2 * 2048


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, addition_files, parity_reward):
    """Two LoRA steps at a large lr (A and B both move: B starts at 0, so A's first gradient is 0)."""
    from gspo.config import load_config

    out = tmp_path_factory.mktemp("lora") / "run"
    train, val = addition_files
    config = load_config(None, [
        f"custom_reward_function.path={parity_reward}", f"actor_rollout_ref.model.path={tiny_model_dir}",
        f"data.train_files=[{train}]", f"data.val_files=[{val}]", f"trainer.default_local_dir={out}",
        "data.train_batch_size=4", "data.gen_batch_size=8", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "data.max_response_length=4",
        "trainer.total_training_steps=2", "trainer.val_before_train=false", "trainer.test_freq=-1",
        "trainer.logger=[]", "trainer.device=cpu", "actor_rollout_ref.actor.optim.lr=0.01", *LORA],
        preset=ADDITION_PRESET)
    trainer = Trainer(config)
    before = _snapshot(trainer.model)
    trainer.fit()
    return trainer, before, out


def test_only_adapters_train_and_hold_optimizer_state(trained):
    trainer, before, _ = trained
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert sum(p.numel() for name, p in trainer.model.named_parameters() if name in trainable) == ADAPTER_PARAMS
    optimized = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert sum(p.numel() for p in optimized) == ADAPTER_PARAMS
    assert all(p.dtype == torch.float32 for p in optimized)
    after = trainer.model.state_dict()
    for name, value in before.items():
        if name in trainable:
            assert not torch.equal(after[name], value), f"{name} did not train"
        else:
            assert torch.equal(after[name], value), f"frozen {name} changed"


def test_adapters_start_as_the_identity(make_config, tiny_model_dir):
    trainer = Trainer(make_config(*LORA))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    assert torch.equal(_logits(trainer.model, ids), _logits(base, ids))  # B = 0: the policy starts at the base


def test_merged_export_and_peft_adapter_compute_the_adapted_policy(trained, tiny_model_dir):
    trainer, _, out = trained
    ids = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 3, 4, 5]])
    adapted = _logits(trainer.model, ids)
    base = _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)
    assert (adapted - base).abs().max() > 1e-3  # the adapters did change the policy
    merged = AutoModelForCausalLM.from_pretrained(out / "final_model")  # a plain HF folder: no peft needed
    assert not any("lora" in name or "base_layer" in name for name, _ in merged.named_parameters())
    # W + s B A in one matrix vs W x + s B (A x): the same function up to float32 rounding.
    torch.testing.assert_close(_logits(merged, ids), adapted, rtol=0, atol=1e-5)
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "final_adapter")
    torch.testing.assert_close(_logits(adapter, ids), adapted, rtol=0, atol=1e-6)
    assert json.loads((out / "final_adapter" / "adapter_config.json").read_text())["r"] == 4
    # `gspo eval --model` takes an adapter folder (final_adapter/, a checkpoint's adapter/): base + merged adapter.
    evaluated = load_causal_lm(str(out / "final_adapter"), torch.device("cpu"))
    torch.testing.assert_close(_logits(evaluated, ids), adapted, rtol=0, atol=1e-5)
    assert load_tokenizer(str(out / "checkpoints" / "global_step_2" / "adapter")).pad_token_id is not None


def test_merged_weights_are_base_plus_scaled_product(trained):
    trainer, _, _ = trained
    merged = dict(iter_merged_weights(trainer.model))
    state = trainer.model.state_dict()
    prefix = "model.layers.0.self_attn.q_proj"
    a, b = state[f"{prefix}.lora_A.default.weight"], state[f"{prefix}.lora_B.default.weight"]
    expected = state[f"{prefix}.base_layer.weight"] + (8 / 4) * b @ a  # alpha / r = 2
    torch.testing.assert_close(merged[f"{prefix}.weight"], expected, rtol=0, atol=1e-7)
    assert torch.equal(merged[f"{prefix}.bias"], state[f"{prefix}.base_layer.bias"])
    assert "model.embed_tokens.weight" in merged


def test_kl_reference_is_the_base_with_adapters_off(trained, tiny_model_dir):
    trainer, _, _ = trained
    batch, _ = trainer.producer.produce(trainer.global_step)
    common = dict(micro_batch_size=8, temperature=1.0, autocast_dtype=None)
    base_log_probs = compute_log_probs(AutoModelForCausalLM.from_pretrained(tiny_model_dir), batch, **common)
    with trainer.policy_update.reference() as reference:
        assert reference is trainer.model  # no second copy of the weights
        reference_log_probs = compute_log_probs(reference, batch, **common)
    assert torch.equal(reference_log_probs, base_log_probs)
    policy_log_probs = compute_log_probs(trainer.model, batch, **common)  # adapters back on afterwards
    assert (policy_log_probs - base_log_probs).abs().max() > 1e-4
    # The trainer fills ref_log_probs the same way when the KL loss is on (its shared-prompt forward rounds
    # differently from a full-sequence one: float32 noise).
    trainer.config.actor_rollout_ref.actor.use_kl_loss = True
    batch.advantages = ADV_ESTIMATORS["grpo"](batch.seq_final_reward, batch.group_ids)
    trainer.policy_update.compute_reference_log_probs(batch, {})
    torch.testing.assert_close(batch.ref_log_probs, base_log_probs, rtol=0, atol=1e-6)


def test_kl_loss_run_loads_no_reference_copy(make_config):
    trainer = Trainer(make_config(*LORA, "actor_rollout_ref.actor.use_kl_loss=true"))
    assert trainer.policy_update.context.reference_model is None
    metrics = trainer.train_step()
    assert metrics["actor/kl_loss"] == pytest.approx(0.0, abs=1e-9)  # first step: the policy is still the base


def test_resume_is_bit_identical_and_checkpoints_hold_only_adapters(make_config, tmp_path):
    common = (*LORA, "trainer.total_training_steps=4", "trainer.save_freq=2", "trainer.max_actor_ckpt_to_keep=0",
              "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.optim.lr=0.01",
              "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.5")
    straight = Trainer(make_config(*common))
    straight.fit()
    checkpoint = tmp_path / "run" / "checkpoints" / "global_step_2"
    assert not (checkpoint / "model").exists() and (checkpoint / "adapter" / "adapter_model.safetensors").is_file()
    resumed = Trainer(make_config(*common, "trainer.resume_mode=resume_path",
                                  f"trainer.resume_from_path={checkpoint}",
                                  f"trainer.default_local_dir={tmp_path / 'resumed'}"))
    assert resumed.global_step == 2
    resumed.fit()
    for name, value in _snapshot(straight.model).items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_checkpoint_state_has_no_base_weights(make_config, tmp_path):
    import torch.distributed.checkpoint as dcp

    trainer = Trainer(make_config(*LORA, "trainer.total_training_steps=1"))
    path = trainer.save_checkpoint()
    keys = dcp.FileSystemReader(str(path / "state")).read_metadata().state_dict_metadata.keys()
    model_keys = [k for k in keys if k.startswith("model.")]
    assert model_keys and all(".lora_A." in k or ".lora_B." in k for k in model_keys)


def test_resume_refuses_another_base_or_a_full_checkpoint(make_config, tmp_path, tiny_model_dir):
    full = Trainer(make_config("trainer.total_training_steps=1"))
    full_checkpoint = full.save_checkpoint()
    # The resume's config comparison (gspo.trainer.resume) refuses it first: lora_rank is a training key.
    with pytest.raises(ValueError, match="written by a different run: .*lora_rank: 0 in the checkpoint, 4 now"):
        Trainer(make_config(*LORA, "trainer.resume_mode=resume_path", f"trainer.resume_from_path={full_checkpoint}"))
    # Same config, same base path, other weights there (the base was overwritten in place): the fingerprint.
    other = tmp_path / "other_base"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.save_pretrained(other)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (other / name).write_bytes((tiny_model_dir / name).read_bytes())
    on_other = (*LORA, f"actor_rollout_ref.model.path={other}")
    lora_run = Trainer(make_config(*on_other, f"trainer.default_local_dir={tmp_path / 'lora'}"))
    lora_checkpoint = lora_run.save_checkpoint()
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)
    model.save_pretrained(other)
    with pytest.raises(ValueError, match="other base weights"):
        Trainer(make_config(*on_other, "trainer.resume_mode=resume_path",
                            f"trainer.resume_from_path={lora_checkpoint}"))


def test_bad_lora_settings_name_the_key(make_config):
    with pytest.raises(ConfigError, match="actor_rollout_ref.model.lora_rank"):
        make_config("actor_rollout_ref.model.lora_rank=-1")
    with pytest.raises(ConfigError, match="actor_rollout_ref.model.lora_dropout"):
        make_config("actor_rollout_ref.model.lora_dropout=1.0")
    with pytest.raises(ConfigError, match="actor_rollout_ref.model.target_modules"):
        make_config("actor_rollout_ref.model.target_modules=5")
    with pytest.raises(ConfigError, match="actor_rollout_ref.model.target_modules"):
        Trainer(make_config(*LORA, "actor_rollout_ref.model.target_modules=[no_such_layer]"))
    with pytest.raises(ConfigError, match="actor_rollout_ref.model.target_modules.*only linear"):
        Trainer(make_config(*LORA, "actor_rollout_ref.model.target_modules=[embed_tokens]"))


def test_missing_peft_is_a_config_error_before_the_weights_load(make_config, monkeypatch):
    import sys

    from gspo.trainer.preflight import preflight

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(ConfigError, match=r"lora_rank: LoRA needs peft; install it with pip install -e '.\[lora\]'"):
        preflight(make_config(*LORA))  # gspo validate
