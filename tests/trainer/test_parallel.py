"""Rank shares of a batch and merging per-rank metrics (the pure parts of data parallelism)."""

from __future__ import annotations

import pytest
import torch

from gspo.distributed import DistContext
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.metrics import MetricAccumulator
from gspo.trainer.parallel import local_rows, merge_rank_reward_metrics


def _batch(rows: int) -> RolloutBatch:
    return RolloutBatch(
        prompt_ids=torch.zeros(rows, 2, dtype=torch.long),
        prompt_mask=torch.ones(rows, 2, dtype=torch.long),
        response_ids=torch.zeros(rows, 3, dtype=torch.long),
        response_mask=torch.ones(rows, 3),
        group_ids=torch.arange(rows) // 4,
        prompt_index=torch.arange(rows),
    )


def test_each_rank_takes_its_contiguous_share_of_every_mini_batch():
    batch = _batch(16)  # 2 mini-batches of 8 rows
    shares = [local_rows(batch, 8, DistContext(rank=r, world_size=2)).prompt_index.tolist() for r in range(2)]
    assert shares == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]
    assert local_rows(batch, 8, DistContext()) is batch


def test_shares_cover_every_item_once():
    for num_items in range(0, 12):
        for world in (1, 2, 3, 5):
            bounds = [DistContext(rank=r, world_size=world).share_bounds(num_items) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == num_items
            assert all(bounds[i][1] == bounds[i + 1][0] for i in range(world - 1))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_reward_metrics_merge_as_sequence_weighted_means_and_summed_errors():
    merged = merge_rank_reward_metrics(
        [({"reward/errors": 1.0, "reward/overlong": 0.5}, 6), ({"reward/errors": 2.0, "reward/overlong": 0.0}, 2)]
    )
    assert merged == {"reward/errors": 3.0, "reward/overlong": pytest.approx(0.375)}  # (0.5 * 6 + 0) / 8


def test_metric_accumulators_merge_across_ranks():
    first = MetricAccumulator(max_names={"actor/ratio_max"})
    second = first.like()
    first.add({"actor/pg_clipfrac": 0.5, "actor/ratio_max": 1.2, "reward/extra/len_max": 2.0}, weight=3)
    second.add({"actor/pg_clipfrac": 0.1, "actor/ratio_max": 1.5, "reward/extra/len_max": 6.0}, weight=1)
    reduced = first.like().merge([first, second]).reduce()
    # (1.5 + 0.1) / 4; a name ending in _max that was not declared is a weighted mean: (6 + 6) / 4
    assert reduced == {"actor/pg_clipfrac": pytest.approx(0.4), "actor/ratio_max": 1.5,
                       "reward/extra/len_max": 3.0}
