"""Exact resume, atomic checkpoints under kill -9, graceful SIGTERM, non-finite updates, unwritable output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from gspo.trainer import Trainer
from gspo.trainer.checkpoint import select_checkpoint
from gspo.trainer.run_folder import RunFolderError, StorageError
from tests.presets import PRESET_ARGS


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_from_step_2_reaches_bit_identical_parameters(make_config, tmp_path):
    # Off-policy mini-batches, dynamic sampling, warm-up and sampling RNG all have to line up for this to hold.
    common = (
        "trainer.total_training_steps=4",
        "trainer.save_freq=2",
        "trainer.max_actor_ckpt_to_keep=0",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.5",
        "trainer.test_freq=2",
    )
    straight = Trainer(make_config(*common))
    straight.fit()
    checkpoint = tmp_path / "run" / "checkpoints" / "global_step_2"
    resumed = Trainer(
        make_config(
            *common,
            "trainer.resume_mode=resume_path",
            f"trainer.resume_from_path={checkpoint}",
            f"trainer.default_local_dir={tmp_path / 'resumed'}",
        )
    )
    assert resumed.global_step == 2
    resumed.fit()
    # Bit-identical on CPU: same data order, RNG streams, optimizer moments and LR schedule.
    for name, value in _state(straight.model).items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_auto_resume_picks_latest_complete_and_keeps_last_k(make_config, tmp_path):
    Trainer(
        make_config("trainer.total_training_steps=3", "trainer.save_freq=1", "trainer.max_actor_ckpt_to_keep=2")
    ).fit()
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.glob("global_step_*")) == ["global_step_2", "global_step_3"]
    assert select_checkpoint(root).name == "global_step_3"
    trainer = Trainer(make_config("trainer.total_training_steps=4", "trainer.resume_mode=auto"))
    assert trainer.global_step == 3
    assert (root / "global_step_3" / "config.yaml").read_text().startswith("data:")


KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys
    import gspo.trainer.checkpoint as ck
    from gspo.cli import main
    original = ck._fsync_tree
    def fsync_then_die(folder):
        original(folder)
        if "global_step_2" in str(folder):  # files of step 2 written, not yet renamed into place
            os.kill(os.getpid(), signal.SIGKILL)
    ck._fsync_tree = fsync_then_die
    sys.exit(main(["train", *sys.argv[1:]]))
""")


def _base_args(tiny_model_dir, addition_files, parity_reward, out) -> list[str]:
    train, val = addition_files
    return [
        *PRESET_ARGS,  # first: the command-line option precedes the overrides
        f"actor_rollout_ref.model.path={tiny_model_dir}",
        f"data.train_files=[{train}]",
        f"data.val_files=[{val}]",
        f"custom_reward_function.path={parity_reward}",
        f"trainer.default_local_dir={out}",
        "data.train_batch_size=4",
        "data.gen_batch_size=8",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "data.max_response_length=4",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.logger=[]",
        "trainer.device=cpu",
    ]


def test_kill_9_during_checkpoint_write_leaves_previous_checkpoint_loadable(
    tiny_model_dir, addition_files, parity_reward, tmp_path
):
    out = tmp_path / "run"
    args = _base_args(tiny_model_dir, addition_files, parity_reward, out) + [
        "trainer.total_training_steps=3",
        "trainer.save_freq=1",
    ]
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    root = out / "checkpoints"
    assert (root / ".tmp_global_step_2").is_dir() and not (root / "global_step_2").exists()
    assert select_checkpoint(root).name == "global_step_1"
    # The same command resumes from step 1 and finishes.
    done = subprocess.run([sys.executable, "-m", "gspo", "train", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # step 2 died before it was logged; the resumed run redid it from step 1
    assert select_checkpoint(root).name == "global_step_3" and not (root / ".tmp_global_step_2").exists()


def test_sigterm_checkpoints_and_says_how_to_resume(tiny_model_dir, addition_files, parity_reward, tmp_path):
    out = tmp_path / "run"
    args = _base_args(tiny_model_dir, addition_files, parity_reward, out) + ["trainer.total_training_steps=500"]
    proc = subprocess.Popen([sys.executable, "-m", "gspo", "train", *args], stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "SIGTERM received" in stderr and "Resume by running the same command again" in stderr
    # On its own line, not appended to the progress bar's.
    assert any(line.startswith("gspo train: stopped: SIGTERM received") for line in stderr.split("\n")), stderr[-2000:]
    latest = select_checkpoint(out / "checkpoints")
    assert latest is not None
    assert json.loads((latest / "trainer_state.json").read_text())["step"] >= 1


def test_non_finite_loss_skips_update_then_stops(make_config, monkeypatch):
    import gspo.trainer.actor as actor

    real = actor.compute_policy_loss

    def nan_loss(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        return loss * float("nan"), metrics

    monkeypatch.setattr(actor, "compute_policy_loss", nan_loss)
    trainer = Trainer(make_config("trainer.max_consecutive_skips=2", "algorithm.filter_groups.enable=false"))
    before = _state(trainer.model)
    metrics = trainer.train_step()
    assert metrics["actor/skipped_updates"] == 1.0
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(FloatingPointError, match="2 optimizer steps in a row"):
        trainer.train_step()


def test_unwritable_output_dir_fails_before_training(make_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunFolderError, match="trainer.default_local_dir: cannot write"):
        Trainer(make_config(f"trainer.default_local_dir={blocker / 'run'}"))


def test_metrics_of_redone_steps_are_not_duplicated(tmp_path):
    from gspo.trainer.metrics import MetricsLogger

    logger = MetricsLogger(tmp_path, [])
    for step in range(4):
        logger.log(step, {"x": float(step)})
    logger.close()
    MetricsLogger(tmp_path, [], resume_step=2).close()  # resumed from the step-2 checkpoint
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_saving_the_same_step_twice_replaces_it_whole(make_config, tmp_path):
    from gspo.trainer.checkpoint import save_checkpoint

    trainer = Trainer(make_config("trainer.total_training_steps=1"))
    trainer.fit()  # writes global_step_1 at the last step
    root = tmp_path / "run" / "checkpoints"
    assert trainer.save_checkpoint() == root / "global_step_1"  # a stop signal now: nothing is rewritten
    state, tensors = trainer.producer.state_dict()
    save_checkpoint(
        root,
        1,
        model=trainer.model,
        hf_model=trainer.model,
        tokenizer=trainer.tokenizer,
        optimizer=trainer.optimizer,
        scheduler=trainer.scheduler,
        trainer_state=state,
        tensors=tensors,
    )
    assert select_checkpoint(root).name == "global_step_1"
    assert sorted(p.name for p in root.iterdir()) == ["global_step_1", "latest"]  # no .old_ / .tmp_ left behind


def test_resuming_at_an_earlier_step_never_prunes_the_checkpoint_just_written(make_config, tmp_path):
    Trainer(
        make_config("trainer.total_training_steps=3", "trainer.save_freq=1", "trainer.max_actor_ckpt_to_keep=0")
    ).fit()
    root = tmp_path / "run" / "checkpoints"
    # Resume at step 1 with steps 2 and 3 on disk (now an abandoned branch), keeping 2 checkpoints.
    Trainer(
        make_config(
            "trainer.total_training_steps=2",
            "trainer.save_freq=1",
            "trainer.max_actor_ckpt_to_keep=2",
            "trainer.resume_mode=resume_path",
            f"trainer.resume_from_path={root / 'global_step_1'}",
        )
    ).fit()
    assert sorted(p.name for p in root.glob("global_step_*")) == ["global_step_1", "global_step_2"]
    assert select_checkpoint(root).name == "global_step_2"
    # The rewritten step 2 is the resumed run's (its trainer state says it came after step 1 of this history).
    assert json.loads((root / "global_step_2" / "trainer_state.json").read_text())["step"] == 2


def test_final_model_export_that_fails_leaves_the_previous_export_whole(make_config, tmp_path, monkeypatch):
    import gspo.trainer.checkpoint as checkpoint

    trainer = Trainer(make_config("trainer.total_training_steps=1"))
    trainer.fit()
    final = tmp_path / "run" / "final_model"
    before = {p.name: p.read_bytes() for p in final.iterdir()}

    def write_half_then_fail(folder, **kwargs):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_hf_folder", write_half_then_fail)
    with pytest.raises(StorageError, match="disk full"):
        trainer.save_final_model()
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    monkeypatch.undo()
    trainer.save_final_model()  # the next export cleans up the half-written temporary folder and replaces whole
    assert sorted(p.name for p in final.parent.iterdir() if p.name.startswith(".")) == [".gspo.lock"]
