"""The second embedded task (sums of 2-3 numbers): data, shipped warm start, and 2 training steps of its config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gspo.cli import main
from gspo.rewards import get_reward_fn
from gspo.tasks.sums import (
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    MAX_PROMPT_TOKENS,
    MAX_RESPONSE_TOKENS,
    SUMS_ASSET_DIR,
    load_sums_rows,
    make_sums_rows,
    make_sums_splits,
)

CONFIG = Path(__file__).resolve().parents[2] / "recipe" / "gspo" / "config" / "sums.yaml"


def test_rows_are_correct_sums_with_a_spread_of_terms_and_digits():
    rows = make_sums_rows(2000, seed=5)
    assert len({r["prompt"] for r in rows}) == 2000
    assert rows == make_sums_rows(2000, seed=5) and rows != make_sums_rows(2000, seed=6)
    term_counts, digit_counts = set(), set()
    for r in rows:
        assert r["prompt"].endswith("=") and r["data_source"] == "sums"
        terms = r["prompt"][:-1].split("+")
        assert sum(map(int, terms)) == int(r["ground_truth"])
        assert all(t == str(int(t)) for t in terms)  # no leading zeros
        assert len(r["prompt"]) <= MAX_PROMPT_TOKENS and len(r["ground_truth"]) + 1 <= MAX_RESPONSE_TOKENS
        term_counts.add(len(terms))
        digit_counts.update(len(t) for t in terms)
    assert term_counts == {2, 3} and digit_counts == {1, 2, 3}


def test_exclude_and_splits_are_disjoint():
    assert "1+2=" not in {r["prompt"] for r in make_sums_rows(500, seed=0, exclude=["1+2="])}
    train, val = make_sums_splits(seed=2, num_val=100, num_train=300)
    assert len(train) == 300 and len(val) == 100
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}


def test_shipped_files_are_what_the_code_generates_and_small():
    train, val = load_sums_rows("train"), load_sums_rows("val")
    assert len(train) == DEFAULT_NUM_TRAIN and len(val) == DEFAULT_NUM_VAL
    assert (train, val) == make_sums_splits()
    total = sum(p.stat().st_size for p in SUMS_ASSET_DIR.iterdir() if p.is_file())
    assert total < 3_000_000
    with pytest.raises(ValueError, match="split"):
        load_sums_rows("test")


def test_reward_is_registered_for_the_task():
    reward = get_reward_fn("sums")
    assert reward("368", "368", {}) == 1.0 and reward("369", "368", {}) == 0.0


def test_two_training_steps_of_the_sums_config(tmp_path):
    args = ["train", "--config", str(CONFIG), f"trainer.default_local_dir={tmp_path}", "trainer.total_training_steps=2",
            "trainer.test_freq=2", "trainer.logger=[]", "data.train_batch_size=16", "data.gen_batch_size=24",
            "actor_rollout_ref.actor.ppo_mini_batch_size=8"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r["val/acc_mean"] for r in rows if "val/acc_mean" in r]
    assert len(val) == 2 and 0.15 <= val[0] <= 0.6  # the shipped warm start is partly right
    train = [r for r in rows if "train/kept_prompts" in r]
    assert [r["step"] for r in train] == [1, 2] and all(r["train/kept_prompts"] >= 16 for r in train)
    # Many groups are all-right or all-wrong at the warm start: that is what the task is for.
    assert train[0]["train/filtered_prompts_ratio"] >= 0.2
    assert (tmp_path / "final_model" / "config.json").is_file()
