"""`gspo validate` fails where `gspo train` would fail before its first step, with one line naming the key."""

from __future__ import annotations

import shutil

import pytest
import torch

from gspo.cli import main
from tests.presets import PRESET_ARGS


def _args(tiny_model_dir, addition_files, tmp_path, *extra: str) -> list[str]:
    train, val = addition_files
    return ["validate", *PRESET_ARGS, f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files=[{train}]",
            f"data.val_files=[{val}]", "data.train_batch_size=16", "data.gen_batch_size=16",
            f"trainer.default_local_dir={tmp_path / 'run'}", *extra]


def test_ok_report_names_dtype_device_and_run_folder(tiny_model_dir, addition_files, tmp_path, capsys):
    assert main(_args(tiny_model_dir, addition_files, tmp_path, "trainer.device=cpu")) == 0
    report = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert report.startswith(f"ok: model {tiny_model_dir} (torch.float32); device cpu; run folder {tmp_path / 'run'}")
    assert not (tmp_path / "run").exists()  # validate creates nothing


def test_config_without_weights_fails(tiny_model_dir, addition_files, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "model.safetensors").unlink()
    assert main(_args(bare, addition_files, tmp_path)) == 2
    assert f"actor_rollout_ref.model.path: {bare} has a config.json but no weights" in capsys.readouterr().err


def test_unwritable_run_folder_fails(tiny_model_dir, addition_files, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(_args(tiny_model_dir, addition_files, tmp_path, f"trainer.default_local_dir={blocker / 'run'}")) == 2
    assert f"trainer.default_local_dir: cannot write to {blocker / 'run'}" in capsys.readouterr().err


def test_cuda_without_gpu_fails(tiny_model_dir, addition_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, on every machine
    assert main(_args(tiny_model_dir, addition_files, tmp_path, "trainer.device=cuda")) == 2
    assert "trainer.device: 'cuda' was asked for" in capsys.readouterr().err


def test_missing_logger_library_is_named(tiny_model_dir, addition_files, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(_args(tiny_model_dir, addition_files, tmp_path, "trainer.logger=[console,wandb]")) == 2
    assert "trainer.logger: 'wandb' needs the wandb library: pip install 'gspo[wandb]'" in capsys.readouterr().err


def test_bf16_checkpoint_reports_its_dtype(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from gspo.model.folder import stored_dtype

    folder = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(folder)
    assert stored_dtype(folder) == torch.bfloat16 and stored_dtype(tiny_model_dir) == torch.float32


@pytest.mark.parametrize("override, expected", [
    ("actor_rollout_ref.rollout.enable_chunked_prefill=true",
     "actor_rollout_ref.rollout.enable_chunked_prefill: vLLM's CPU sampler cannot resume a seeded request"),
    ("actor_rollout_ref.rollout.max_num_batched_tokens=8",  # max_model_len: the default 16 + 6 tokens
     "actor_rollout_ref.rollout.max_num_batched_tokens: 8 must hold one whole prompt + response (max_model_len=22)"),
])
def test_engine_settings_train_would_refuse_fail(tiny_model_dir, addition_files, tmp_path, capsys, override, expected):
    # The engine's own check runs in validation: on CPU, what the vllm engine refuses at start-up is refused here,
    # before (and whether or not) vLLM is installed.
    args = _args(tiny_model_dir, addition_files, tmp_path, "actor_rollout_ref.rollout.name=vllm", "trainer.device=cpu",
                 override)
    assert main(args) == 2
    assert expected in capsys.readouterr().err
