"""Damaged checkpoints are never resumed: each file truncated / overwritten / removed is caught by the manifest,
the damaged checkpoint is skipped with a warning naming the file, the newest intact one is resumed; none intact
exits 2 naming the folder."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from gspo.cli import main
from gspo.distributed import DistContext
from gspo.trainer import Trainer
from gspo.trainer.checkpoint import select_checkpoint
from gspo.trainer.manifest import MANIFEST, CheckpointDamaged, verify
from gspo.trainer.run_folder import RunFolderError
from tests.trainer.test_reliability import _base_args

FILES = ["state/__0_0.distcp", "state/.metadata", "extra.pt", "rng/rank_0.pt", "trainer_state.json", "config.yaml",
         "model/model.safetensors"]


@pytest.fixture(scope="module")
def two_checkpoints(tiny_model_dir, addition_files, parity_reward, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("verify") / "run"
    args = [*_base_args(tiny_model_dir, addition_files, parity_reward, out), "trainer.total_training_steps=2",
            "trainer.save_freq=1", "trainer.max_actor_ckpt_to_keep=0"]
    assert main(["train", *args]) == 0
    return out, args


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _overwrite(path: Path) -> None:
    """64 KiB (or the middle half of a smaller file) replaced by other bytes: the size stays the same."""
    data = bytearray(path.read_bytes())
    start = len(data) // 4
    end = min(len(data), start + max(1, min(64 << 10, len(data) // 2)))
    data[start:end] = bytes((b + 1) % 256 for b in data[start:end])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _overwrite, Path.unlink], ids=["truncated", "overwritten", "missing"])
@pytest.mark.parametrize("name", FILES)
def test_damaged_file_in_latest_is_named_and_the_previous_checkpoint_resumed(
        two_checkpoints, tmp_path, caplog, damage, name):
    run = _copy(two_checkpoints[0], tmp_path)
    root = run / "checkpoints"
    damage(root / "global_step_2" / name)
    with caplog.at_level(logging.WARNING):
        assert select_checkpoint(root) == root / "global_step_1"
    assert f"skipping checkpoint global_step_2: {root / 'global_step_2' / name}" in caplog.text


@pytest.mark.parametrize("content", [b"\xff\xfe", b"global_step_9\n", b""])
def test_unreadable_latest_pointer_is_named_and_the_newest_intact_checkpoint_used(two_checkpoints, tmp_path, caplog,
                                                                                   content):
    run = _copy(two_checkpoints[0], tmp_path)
    (run / "checkpoints" / "latest").write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert select_checkpoint(run / "checkpoints").name == "global_step_2"
    assert f"{run / 'checkpoints' / 'latest'}: unreadable" in caplog.text


def test_missing_or_garbled_manifest_fails_verification(two_checkpoints, tmp_path):
    run = _copy(two_checkpoints[0], tmp_path)
    step = run / "checkpoints" / "global_step_2"
    (step / MANIFEST).write_text('{"format": 1, "files": ')
    with pytest.raises(CheckpointDamaged, match="manifest.json: unreadable"):
        verify(step, DistContext())
    (step / MANIFEST).unlink()
    with pytest.raises(CheckpointDamaged, match="manifest.json: missing"):
        verify(step, DistContext())
    assert select_checkpoint(run / "checkpoints").name == "global_step_1"


def test_resume_skips_a_corrupted_shard_and_continues_from_the_previous_step(two_checkpoints, tmp_path, make_config):
    run = _copy(two_checkpoints[0], tmp_path)
    _overwrite(run / "checkpoints" / "global_step_2" / "state" / "__0_0.distcp")
    trainer = Trainer(make_config(f"trainer.default_local_dir={run}", "trainer.resume_mode=auto",
                                  "trainer.total_training_steps=2", "trainer.save_freq=1",
                                  "trainer.max_actor_ckpt_to_keep=0"))
    assert trainer.global_step == 1
    reference = Trainer(make_config(f"trainer.default_local_dir={tmp_path / 'ref'}", "trainer.total_training_steps=2",
                                    "trainer.resume_mode=resume_path",
                                    f"trainer.resume_from_path={two_checkpoints[0] / 'checkpoints' / 'global_step_1'}"))
    for name, value in reference.model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[name]), name


def test_no_checkpoint_verifies_exits_2_naming_the_folder(two_checkpoints, tmp_path, capsys):
    run = _copy(two_checkpoints[0], tmp_path)
    for step in (1, 2):
        _truncate(run / "checkpoints" / f"global_step_{step}" / "extra.pt")
    with pytest.raises(RunFolderError, match="no checkpoint in .* verifies"):
        select_checkpoint(run / "checkpoints")
    args = [a.replace(str(two_checkpoints[0]), str(run)) for a in two_checkpoints[1]]
    assert main(["train", *args, "trainer.total_training_steps=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"gspo train: error: trainer.default_local_dir: no checkpoint in {run / 'checkpoints'}")


def test_damaged_resume_from_path_exits_2_naming_the_file(two_checkpoints, tmp_path, capsys):
    run = _copy(two_checkpoints[0], tmp_path)
    step = run / "checkpoints" / "global_step_1"
    _truncate(step / "trainer_state.json")
    args = [*two_checkpoints[1], f"trainer.default_local_dir={tmp_path / 'new'}", "trainer.resume_mode=resume_path",
            f"trainer.resume_from_path={step}"]
    assert main(["train", *args]) == 2
    assert f"trainer.resume_from_path: {step} is not a usable checkpoint: {step / 'trainer_state.json'}" in \
        capsys.readouterr().err
