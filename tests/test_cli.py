"""The command line: `gspo validate` accepts good input, rejects bad input with exit 2 and the key named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gspo.cli import main
from tests.presets import PRESET_ARGS
from tests.test_config import SEED_OVERRIDES


def _base(tiny_model_dir, addition_files) -> list[str]:
    """The tiny model and local addition data on the addition preset (``--preset`` first: it must precede the
    overrides)."""
    train, val = addition_files
    return [*PRESET_ARGS, f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files=[{train}]",
            f"data.val_files=[{val}]"]


def test_validate_accepts_seed_override_line(tiny_model_dir, addition_files, capsys):
    assert main(["validate", *_base(tiny_model_dir, addition_files), *SEED_OVERRIDES]) == 0
    out = capsys.readouterr().out
    assert "loss_mode: gspo" in out and "ok: model" in out and "64 train prompts" in out


@pytest.mark.parametrize("override, expected", [
    ("algorithm.filter_groups.metrc=acc", "did you mean 'algorithm.filter_groups.metric'"),
    ("actor_rollout_ref.actor.clip_ratio_low=2", "actor_rollout_ref.actor.clip_ratio_low"),
    ("actor_rollout_ref.rollout.n=0", "actor_rollout_ref.rollout.n"),
    ("algorithm.filter_groups.metric=loss", "algorithm.filter_groups.metric"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=dpo", "actor_rollout_ref.actor.policy_loss.loss_mode"),
    ("actor_rollout_ref.actor.loss_agg_mode=sum", "actor_rollout_ref.actor.loss_agg_mode"),
    ("actor_rollout_ref.actor.ppo_mini_batch_size=3", "must divide data.train_batch_size"),
    ("data.train_batch_size=128", "data.train_batch_size: 128 is larger than the 64 usable prompts"),
    ("data.train_files=[/nonexistent/train.jsonl]", "data.train_files: /nonexistent/train.jsonl"),
    ("actor_rollout_ref.model.path=/nonexistent/model", "actor_rollout_ref.model.path: '/nonexistent/model' does not"),
    ("custom_reward_function.path=/nonexistent/reward.py", "/nonexistent/reward.py"),
])
def test_validate_rejects_bad_input_naming_the_key(tiny_model_dir, addition_files, capsys, override, expected):
    args = ["validate", *_base(tiny_model_dir, addition_files), "data.gen_batch_size=32",
            "actor_rollout_ref.actor.ppo_mini_batch_size=16", override]
    assert main(args) == 2
    assert expected in capsys.readouterr().err


def test_python_dash_m_entry_points_agree(tiny_model_dir, addition_files):
    args = _base(tiny_model_dir, addition_files) + ["actor_rollout_ref.rollout.n=0"]
    for entry in (["-m", "gspo", "validate"], ["-m", "gspo.train"]):
        proc = subprocess.run([sys.executable, *entry, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "actor_rollout_ref.rollout.n: 0 must be >= 1" in proc.stderr
