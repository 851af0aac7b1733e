"""Scoring in the trainer: the reward function's metrics reach the step's metrics whatever their names, and the
reward means are computed once, over every generated response."""

from __future__ import annotations

import pytest

from gspo.trainer import Trainer

# Score 1 for an odd-length response; two extras whose names end like the reward means.
REWARD_WITH_MEAN_LIKE_EXTRAS = '''
def compute_score(response_text, ground_truth, extra_info):
    score = float(len(response_text) % 2)
    return {"score": score, "acc": score, "acc_mean": 0.25, "final_mean": 0.75}
'''


def test_reward_extras_named_like_means_are_logged_and_means_cover_every_response(make_config, tmp_path):
    reward = tmp_path / "extras.py"
    reward.write_text(REWARD_WITH_MEAN_LIKE_EXTRAS)
    trainer = Trainer(make_config(f"custom_reward_function.path={reward}", "algorithm.filter_groups.enable=false"))
    batch, metrics = trainer.producer.produce(trainer.global_step)
    assert metrics["reward/extra/acc_mean"] == 0.25 and metrics["reward/extra/final_mean"] == 0.75
    # Filtering is off, so the batch is everything generated: 4 prompts x 4 responses.
    assert batch.num_sequences == 16
    assert metrics["reward/all/acc_mean"] == pytest.approx(batch.acc.mean().item(), abs=1e-7)
    assert not {"reward/score_mean", "reward/acc_mean", "reward/final_mean"} & set(metrics)
