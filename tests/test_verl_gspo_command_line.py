"""verl's own GSPO example command line (v0.7.0 examples/gspo_trainer/test_gspo_3b_math.sh: every override, in its
order and spelling, at its real batch shape: 512 prompts x 16 responses, mini-batch 128, its dynamic-bsz token
budgets, max_prompt_length 2048) through `gspo validate` and a 1-step `gspo train` with a tiny model, local data and
trainer.logger = console + wandb (offline) + mlflow (file store). Only the response length (8192 -> 3 tokens) and
the step count (500 -> 1) are cut; every key the line leaves out takes verl's default (no preset: the model path is
a local folder). Also: a new user's line, a local model and GSM8K files and nothing else, validates."""

from __future__ import annotations

import json

import pytest

from gspo.cli import main
from gspo.config import field_type
from tests.conftest import write_jsonl

PROJECT, EXPERIMENT = "RL-GSPO", "gspo-epslow-0.0003-epshigh-0.0004-tiny-RL"
CKPTS_DIR = f"checkpoints/experimental/4b/gspo/{EXPERIMENT}"  # the script's /rl/... folder, under the cwd
# The script's sizes; only the response length (8192) and the step count (500) are cut.
TRAIN_BATCH, N_RESP, MINI_BATCH, MICRO_BATCH = 512, 16, 128, 8
MAX_PROMPT, MAX_RESPONSE = 1024 * 2, 3
# The rollout engine's keys: name, mode, then those the script sets after ulysses_sequence_parallel_size. verl's
# script asks for name=vllm with gpu_memory_utilization, enable_chunked_prefill and max_num_batched_tokens; here the
# hf engine runs on CPU in any environment (tests_vllm/ trains with vLLM; benchmarks/gpu_acceptance.py runs the line
# with vLLM on a GPU), and it refuses vLLM-only keys at non-default values rather than ignore them, so those are
# left out.
ENGINE_OVERRIDES = ["actor_rollout_ref.rollout.name=hf", "actor_rollout_ref.rollout.mode=async",
                    "actor_rollout_ref.rollout.tensor_model_parallel_size=1"]


def verl_gspo_overrides(model, train, val, loggers: str, engine: list[str] = ENGINE_OVERRIDES) -> list[str]:
    """The script's overrides at its batch shape, max_response_length 3 and 1 step; ``engine`` laid out as
    ``ENGINE_OVERRIDES``."""
    max_prompt, max_response = MAX_PROMPT, MAX_RESPONSE
    return [
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
        f"data.train_files=['{train}']", f"data.val_files=['{val}']", "data.shuffle=true", "data.prompt_key=prompt",
        "data.truncation=error", "data.filter_overlong_prompts=true", "data.return_raw_chat=True",
        f"data.train_batch_size={TRAIN_BATCH}", f"data.max_prompt_length={max_prompt}",
        f"data.max_response_length={max_response}", f"actor_rollout_ref.rollout.n={N_RESP}",
        "algorithm.use_kl_in_reward=false", "algorithm.kl_ctrl.kl_coef=0.0",
        "actor_rollout_ref.actor.use_kl_loss=false", "actor_rollout_ref.actor.kl_loss_coef=0.0",
        "actor_rollout_ref.actor.clip_ratio_low=0.0003", "actor_rollout_ref.actor.clip_ratio_high=0.0004",
        "actor_rollout_ref.model.use_remove_padding=true", "actor_rollout_ref.actor.use_dynamic_bsz=true",
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={(max_prompt + max_response) * 2}",
        f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={(max_prompt + max_response) * 3}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={(max_prompt + max_response) * 3}",
        *engine[:2],
        f"actor_rollout_ref.model.path={model}", "actor_rollout_ref.model.enable_gradient_checkpointing=true",
        "actor_rollout_ref.actor.optim.lr=1e-6", "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.05",
        "actor_rollout_ref.actor.optim.weight_decay=0.1", f"actor_rollout_ref.actor.ppo_mini_batch_size={MINI_BATCH}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={MICRO_BATCH}",
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
        f"+reward_model.reward_kwargs.overlong_buffer_cfg.len={1024 * 4}",
        "+reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0",
        "+reward_model.reward_kwargs.overlong_buffer_cfg.log=false",
        f"+reward_model.reward_kwargs.max_resp_len={max_response}",
        f"trainer.logger={loggers}", f"trainer.project_name={PROJECT}", f"trainer.experiment_name={EXPERIMENT}",
        "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.val_before_train=false", "trainer.test_freq=10",
        "trainer.save_freq=10", "trainer.total_epochs=10", "trainer.total_training_steps=1",
        f"trainer.default_local_dir={CKPTS_DIR}", "trainer.resume_mode=auto", "trainer.log_val_generations=2",
    ]


@pytest.fixture(scope="module")
def addition_512(tmp_path_factory):
    """600 train prompts (the line draws 512 per step) and 8 val prompts of two-digit addition."""
    folder = tmp_path_factory.mktemp("addition_600")
    rows = [{"prompt": f"{a}+{b}=", "ground_truth": str(a + b), "data_source": "addition"}
            for a in range(25) for b in range(25)]
    return write_jsonl(folder / "train.jsonl", rows[:600]), write_jsonl(folder / "val.jsonl", rows[600:608])


def test_every_engine_key_of_the_script_is_known():
    """Each rollout-engine key is in the schema or in verl_compat's table (never silently dropped)."""
    from gspo import verl_compat

    unknown = [o.split("=")[0] for o in ENGINE_OVERRIDES
               if field_type(o.split("=")[0]) is None and verl_compat.find(o.split("=")[0]) is None]
    assert unknown == []


def test_verl_gspo_command_line_at_its_batch_shape_validates_and_trains_one_step(
        tiny_model_dir, addition_512, parity_reward, tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # the script's run folder, relative to the cwd
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train, val = addition_512
    # A random tiny model never adds correctly: the parity reward gives groups that vary (local data's reward).
    overrides = [*verl_gspo_overrides(tiny_model_dir, train, val, '["console","wandb","mlflow"]'),
                 f"custom_reward_function.path={parity_reward}", "trainer.device=cpu"]
    assert main(["validate", *overrides]) == 0, capsys.readouterr().err
    validated = capsys.readouterr().out
    assert validated.startswith("# preset: none")  # a local model path: verl's defaults for every key left out
    assert "  filter_groups:\n    enable: false" in validated  # verl runs this line without dynamic sampling
    assert main(["train", *overrides]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith("preset: none")
    run = tmp_path / CKPTS_DIR
    (row,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 1
    assert row["train/num_gen_batches"] == 1 and row["train/kept_prompts"] == TRAIN_BATCH  # one batch fills it
    assert row["actor/num_updates"] == TRAIN_BATCH // MINI_BATCH  # 4 mini-batches of 128 x 16 sequences
    assert (run / "final_model" / "config.json").is_file()
    assert len((run / "val_generations.jsonl").read_text().splitlines()) == 2  # test_freq=10: after the last step
    assert list((run / "wandb").glob("offline-run-*")), "wandb wrote no offline run"
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(PROJECT)
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == EXPERIMENT
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "timing/step")] == [1]
    assert logged.data.params["actor_rollout_ref.actor.policy_loss.loss_mode"] == "gspo"
    assert f"final model  {CKPTS_DIR}/final_model" in out


def test_the_line_with_the_toy_tasks_batch_settings_is_refused_naming_the_keys(tiny_model_dir, addition_512,
                                                                               parity_reward, capsys):
    """What a verl line met before verl's defaults: dynamic sampling capped at 10 batches of 48 prompts for 512."""
    train, val = addition_512
    overrides = [*verl_gspo_overrides(tiny_model_dir, train, val, '["console"]'),
                 f"custom_reward_function.path={parity_reward}", "trainer.device=cpu",
                 "algorithm.filter_groups.enable=true", "data.gen_batch_size=48",
                 "algorithm.filter_groups.max_num_gen_batches=10"]
    assert main(["validate", *overrides]) == 2
    err = capsys.readouterr().err
    assert "algorithm.filter_groups.max_num_gen_batches: data.gen_batch_size=48 x " \
           "algorithm.filter_groups.max_num_gen_batches=10 = 480 prompts per step can never fill " \
           "data.train_batch_size=512" in err


def test_a_local_model_and_gsm8k_files_alone_validate(tiny_model_dir, tmp_path, capsys):
    """A new user's first line: verl's defaults (max_prompt_length 512, 1024 prompts per step) fit GSM8K."""
    from gspo.data.gsm8k import prepare_gsm8k
    from tests.gsm8k_fixture import write_gsm8k_fixture

    raw = write_gsm8k_fixture(tmp_path / "raw", num_train=1100, num_test=16)
    prepare_gsm8k(raw, tmp_path / "gsm8k")
    assert main(["validate", f"actor_rollout_ref.model.path={tiny_model_dir}",
                 f"data.train_files={tmp_path / 'gsm8k' / 'train.parquet'}",
                 f"data.val_files={tmp_path / 'gsm8k' / 'test.parquet'}"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith("# preset: none") and "max_prompt_length: 512" in out and "1100 train prompts" in out
