"""Exit codes say what happened: 2 only for input a message names, 1 with the traceback for anything unexpected,
0 for a run that is already complete; checkpoint-load failures say what failed; the README's table is the code's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from gspo.cli import main
from gspo.distributed import SINGLE_PROCESS
from gspo.errors import EXIT_CODES, EXIT_INPUT, EXIT_INTERNAL, InputError
from gspo.trainer.checkpoint import load_error
from gspo.trainer.parallel import gather_from_ranks
from gspo.trainer.run_folder import RunFolderError, StorageError
from tests.trainer.test_reliability import _base_args

README = Path(__file__).resolve().parents[1] / "README.md"

# A user's policy loss that fails the way a shape bug in torch code does: a ValueError that no check anticipated.
BROKEN_LOSS = """
def broken_loss(old_log_prob, log_prob, advantages, response_mask, *, clip_ratio_low, clip_ratio_high):
    raise ValueError("operands could not be broadcast together")
"""


def test_an_unexpected_error_keeps_its_traceback_exits_1_and_is_logged_in_the_run_folder(
        tiny_model_dir, addition_files, parity_reward, tmp_path, capsys):
    loss = tmp_path / "broken_loss.py"
    loss.write_text(BROKEN_LOSS)
    out = tmp_path / "run"
    args = [*_base_args(tiny_model_dir, addition_files, parity_reward, out),
            f"actor_rollout_ref.actor.policy_loss.path={loss}", "actor_rollout_ref.actor.policy_loss.name=broken_loss",
            "actor_rollout_ref.actor.policy_loss.loss_mode=broken", "trainer.total_training_steps=1"]
    assert main(["train", *args]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "broken_loss.py" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("gspo train: internal error: ValueError: operands could not be broadcast together")
    assert f"in {out / 'error.log'}" in last
    logged = (out / "error.log").read_text()
    assert "Traceback (most recent call last)" in logged and "operands could not be broadcast" in logged


def test_named_input_still_exits_2_in_one_line(tiny_model_dir, addition_files, parity_reward, tmp_path, capsys):
    args = [*_base_args(tiny_model_dir, addition_files, parity_reward, tmp_path / "run"), "data.train_batch_size=0"]
    assert main(["train", *args]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "data.train_batch_size" in err


def test_checkpoint_load_errors_say_what_failed(tmp_path):
    path = tmp_path / "global_step_3"
    oom = load_error(path, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert isinstance(oom, MemoryError) and not isinstance(oom, InputError)
    assert "out of memory while loading the checkpoint: CUDA out of memory" in str(oom)
    io = load_error(path, OSError(5, "Input/output error"))
    assert isinstance(io, StorageError) and "could not read the checkpoint" in str(io)
    mismatch = load_error(path, RuntimeError("size mismatch for model.embed_tokens.weight"))
    assert isinstance(mismatch, RunFolderError) and "does not match the model or optimizer" in str(mismatch)


class _TwoRanks:
    """Rank 0's view of a 2-rank gather in which rank 1 raised."""

    is_distributed = True

    def __init__(self, remote_failure):
        self.remote_failure = remote_failure

    def all_gather_objects(self, local):
        return [local, (None, self.remote_failure)]


@pytest.mark.parametrize("remote, expected", [(("DataError: train.jsonl:3: no prompt", True), InputError),
                                              (("KeyError: 'logits'", False), RuntimeError)])
def test_another_ranks_error_keeps_its_kind(remote, expected):
    with pytest.raises(expected, match=f"rank 1 failed: {re.escape(remote[0])}") as raised:
        gather_from_ranks(_TwoRanks(remote), lambda: 1)
    assert isinstance(raised.value, InputError) == (expected is InputError)
    assert gather_from_ranks(SINGLE_PROCESS, lambda: 7) == [7]


def _readme_exit_table() -> dict[str, str]:
    text = README.read_text()
    heading = re.search(r"^#+ Exit codes$", text, flags=re.MULTILINE)
    assert heading, "README.md has no 'Exit codes' section"
    section = text[heading.end():].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (.+?) \|$", section, flags=re.MULTILINE)
    return dict(rows)


def test_readme_exit_code_table_is_the_code():
    assert _readme_exit_table() == EXIT_CODES
