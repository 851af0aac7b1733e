"""Disk full while checkpointing or exporting: one line with the OS error and the path, exit 74, the partial folder
removed, the previous checkpoint intact, and the same command resumes once there is space."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import gspo.trainer.checkpoint as checkpoint
from gspo.cli import main
from gspo.errors import EXIT_STORAGE
from gspo.trainer.checkpoint import select_checkpoint
from tests.trainer.test_reliability import _base_args


def _args(tiny_model_dir, addition_files, parity_reward, out: Path, steps: int) -> list[str]:
    return [*_base_args(tiny_model_dir, addition_files, parity_reward, out), f"trainer.total_training_steps={steps}",
            "trainer.save_freq=1", "trainer.max_actor_ckpt_to_keep=3"]


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_one_line_no_traceback(err: str, *parts: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("gspo train:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], lines[0]


def _fail_writes_under(monkeypatch, marker: str) -> None:
    """ENOSPC from the HF export of any folder whose path contains ``marker``, after writing half a file."""
    real = checkpoint.save_hf_folder

    def save(folder, **kwargs):
        if marker not in str(folder):
            return real(folder, **kwargs)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model.safetensors"))

    monkeypatch.setattr(checkpoint, "save_hf_folder", save)


def test_enospc_during_checkpoint_exits_74_and_resumes(tiny_model_dir, addition_files, parity_reward, tmp_path,
                                                        monkeypatch, capsys):
    out = tmp_path / "run"
    args = _args(tiny_model_dir, addition_files, parity_reward, out, steps=3)
    _fail_writes_under(monkeypatch, ".tmp_global_step_2")
    assert main(["train", *args]) == EXIT_STORAGE
    _assert_one_line_no_traceback(capsys.readouterr().err, "checkpoint of step 2",
                                  "[Errno 28] No space left on device", str(out / "checkpoints"))
    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["global_step_1", "latest"]  # no .tmp_ left behind
    assert select_checkpoint(root).name == "global_step_1"
    monkeypatch.undo()
    assert main(["train", *args]) == 0
    assert _steps(out) == [1, 2, 3]


def test_enospc_during_final_export_exits_74_and_the_rerun_only_exports(
        tiny_model_dir, addition_files, parity_reward, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = _args(tiny_model_dir, addition_files, parity_reward, out, steps=2)
    _fail_writes_under(monkeypatch, ".tmp_final_model")
    assert main(["train", *args]) == EXIT_STORAGE
    _assert_one_line_no_traceback(capsys.readouterr().err, "final model export", "No space left on device")
    assert not (out / "final_model").exists() and not (out / ".tmp_final_model").exists()
    monkeypatch.undo()
    assert main(["train", *args]) == 0
    assert _steps(out) == [1, 2] and (out / "final_model" / "model.safetensors").is_file()
    assert main(["train", *args]) == 0  # now finished: re-running it says so and succeeds
    assert "already complete" in capsys.readouterr().out


def _can_mount_tmpfs(target: Path) -> bool:
    target.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(target)],
                          capture_output=True).returncode == 0


def test_real_full_disk_on_a_small_tmpfs(tiny_model_dir, addition_files, parity_reward, tmp_path, capsys):
    """The real thing where the test may mount (root, as on CI): torch's writers then fail their own way."""
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (not root); test_enospc_during_checkpoint_exits_74_and_resumes "
                    "covers the same path with an injected ENOSPC")
    try:
        out = disk / "run"
        assert main(["train", *_args(tiny_model_dir, addition_files, parity_reward, out, steps=1)]) == 0
        used = os.statvfs(disk).f_blocks - os.statvfs(disk).f_bfree
        step = sum(p.stat().st_size for p in (out / "checkpoints" / "global_step_1").rglob("*") if p.is_file())
        size_kib = (used * os.statvfs(disk).f_frsize + step // 2) // 1024
        subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(disk)], check=True)
        capsys.readouterr()
        args = _args(tiny_model_dir, addition_files, parity_reward, out, steps=2)
        assert main(["train", *args]) == EXIT_STORAGE
        _assert_one_line_no_traceback(capsys.readouterr().err, "checkpoint of step 2", "No space left on device")
        assert not any(p.name.startswith(".tmp_") for p in (out / "checkpoints").iterdir())
        assert select_checkpoint(out / "checkpoints").name == "global_step_1"
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert main(["train", *args]) == 0
        assert _steps(out) == [1, 2]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
