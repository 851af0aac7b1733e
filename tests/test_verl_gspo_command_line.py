"""verl's own GSPO example command line (examples/gspo_trainer/test_gspo_3b_math.sh: every override, in its
order and spelling, sizes scaled down, local tiny model and data) through `gspo validate` and a 2-step `gspo train`,
with trainer.logger = console + wandb (offline) + mlflow (file store)."""

from __future__ import annotations

import json

import pytest

from gspo.cli import main
from gspo.config import field_type

PROJECT, EXPERIMENT = "RL-GSPO", "gspo-epslow-0.0003-epshigh-0.0004-tiny-RL"
# The rollout engine's keys: name, mode, then those the script sets after ulysses_sequence_parallel_size. verl's
# script asks for name=vllm with gpu_memory_utilization, enable_chunked_prefill and max_num_batched_tokens; here the
# hf engine runs on CPU in any environment (tests_vllm/ trains with vLLM; benchmarks/gpu_acceptance.py runs the line
# with vLLM on a GPU), and it refuses vLLM-only keys at non-default values rather than ignore them, so those are
# left out.
ENGINE_OVERRIDES = ["actor_rollout_ref.rollout.name=hf", "actor_rollout_ref.rollout.mode=async",
                    "actor_rollout_ref.rollout.tensor_model_parallel_size=1"]


def verl_gspo_overrides(model, train, val, loggers: str, engine: list[str] = ENGINE_OVERRIDES) -> list[str]:
    """The script's overrides with max_prompt_length 16, max_response_length 4, 4 prompts x 4 responses;
    ``engine`` laid out as ``ENGINE_OVERRIDES``."""
    max_prompt, max_response = 16, 4
    return [
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
        f"data.train_files=['{train}']", f"data.val_files=['{val}']", "data.shuffle=true", "data.prompt_key=prompt",
        "data.truncation=error", "data.filter_overlong_prompts=true", "data.train_batch_size=4",
        f"data.max_prompt_length={max_prompt}", f"data.max_response_length={max_response}",
        "actor_rollout_ref.rollout.n=4", "algorithm.use_kl_in_reward=false", "algorithm.kl_ctrl.kl_coef=0.0",
        "actor_rollout_ref.actor.use_kl_loss=false", "actor_rollout_ref.actor.kl_loss_coef=0.0",
        "actor_rollout_ref.actor.clip_ratio_low=0.0003", "actor_rollout_ref.actor.clip_ratio_high=0.0004",
        "actor_rollout_ref.model.use_remove_padding=true", "actor_rollout_ref.actor.use_dynamic_bsz=true",
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={(max_prompt + max_response) * 2}",
        f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={(max_prompt + max_response) * 3}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={(max_prompt + max_response) * 3}",
        *engine[:1], *engine[:1], *engine[1:2],  # the script names the engine twice
        f"actor_rollout_ref.model.path={model}", "actor_rollout_ref.model.enable_gradient_checkpointing=true",
        "actor_rollout_ref.actor.optim.lr=1e-6", "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.05",
        "actor_rollout_ref.actor.optim.weight_decay=0.1", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.fsdp_config.param_offload=true",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=true", "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.actor.grad_clip=1.0", "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
        "actor_rollout_ref.actor.ulysses_sequence_parallel_size=1", *engine[2:],
        "actor_rollout_ref.rollout.temperature=1.0", "actor_rollout_ref.rollout.top_p=1.0",
        "actor_rollout_ref.rollout.top_k=-1", "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        "actor_rollout_ref.rollout.val_kwargs.top_p=0.7", "actor_rollout_ref.rollout.val_kwargs.top_k=-1",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=true", "actor_rollout_ref.rollout.val_kwargs.n=1",
        "actor_rollout_ref.ref.fsdp_config.param_offload=true",
        "actor_rollout_ref.ref.ulysses_sequence_parallel_size=1",
        "actor_rollout_ref.actor.entropy_checkpointing=true", "reward_model.reward_manager=dapo",
        "+reward_model.reward_kwargs.overlong_buffer_cfg.enable=false",
        "+reward_model.reward_kwargs.overlong_buffer_cfg.len=2",
        "+reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0",
        "+reward_model.reward_kwargs.overlong_buffer_cfg.log=false",
        f"+reward_model.reward_kwargs.max_resp_len={max_response}",
        f"trainer.logger={loggers}", f"trainer.project_name={PROJECT}", f"trainer.experiment_name={EXPERIMENT}",
        "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.val_before_train=false", "trainer.test_freq=10",
        "trainer.save_freq=10", "trainer.total_epochs=10", "trainer.total_training_steps=2",
        "trainer.resume_mode=auto", "trainer.log_val_generations=2",
    ]


def test_every_engine_key_of_the_script_is_known():
    """Each rollout-engine key is in the schema or in verl_compat's table (never silently dropped)."""
    from gspo import verl_compat

    unknown = [o.split("=")[0] for o in ENGINE_OVERRIDES
               if field_type(o.split("=")[0]) is None and verl_compat.find(o.split("=")[0]) is None]
    assert unknown == []


def test_verl_gspo_command_line_validates_and_trains_two_steps(tiny_model_dir, addition_files, parity_reward,
                                                               tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # verl's layout: checkpoints/<project_name>/<experiment_name> under the cwd
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train, val = addition_files
    # A random tiny model never adds correctly: the parity reward gives groups that vary (local data's reward).
    overrides = [*verl_gspo_overrides(tiny_model_dir, train, val, '["console","wandb","mlflow"]'),
                 f"custom_reward_function.path={parity_reward}", "trainer.device=cpu"]
    assert main(["validate", *overrides]) == 0, capsys.readouterr().err
    assert main(["train", *overrides]) == 0, capsys.readouterr().err
    run = tmp_path / "checkpoints" / PROJECT / EXPERIMENT
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert (run / "final_model" / "config.json").is_file()
    assert len((run / "val_generations.jsonl").read_text().splitlines()) == 2
    assert list((run / "wandb").glob("offline-run-*")), "wandb wrote no offline run"
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(PROJECT)
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == EXPERIMENT
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "timing/step")] == [1, 2]
    assert logged.data.params["actor_rollout_ref.actor.policy_loss.loss_mode"] == "gspo"
    assert f"final model  {run.relative_to(tmp_path) / 'final_model'}" in capsys.readouterr().out
