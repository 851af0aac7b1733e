"""What crosses between 2 gloo ranks per step: counted by benchmarks/comm_bytes.py's wrapper of the collectives
under gspo.distributed, on synthetic rows (no model)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from comm_bytes import measure  # noqa: E402

N = 4  # responses per prompt


@pytest.fixture(scope="module")
def small_and_large():
    """Rank 0's bytes for 2 prompts x 16 tokens and for 16 prompts x 64 tokens (32x the response tokens)."""
    return measure([(2, 16), (16, 64)], n=N)


def test_a_rank_without_prompts_still_takes_part_and_every_row_arrives():
    # One prompt for two ranks: rank 1 generates nothing; the gather (which checks the row count) and the
    # metrics over rank 0's rows complete on both ranks.
    (row,) = measure([(1, 8)], n=N)
    assert row["rows"] == N and row["metric_bytes"] == 72


def test_metric_bytes_do_not_grow_with_batch_or_response_length(small_and_large):
    small, large = small_and_large
    # 5 mismatch + 3 importance-weight sums (float64) all-reduced, one float64 maximum: 72 bytes.
    assert small["metric_bytes"] == large["metric_bytes"] == 72
    assert small["metric_pickled_bytes"] == large["metric_pickled_bytes"] == 0


def test_generated_rows_cross_as_tensors_and_only_a_fixed_size_record_is_pickled(small_and_large):
    small, large = small_and_large
    # The pickled part (errors, reward metrics, the batch's field dtypes) is the same whatever the batch.
    assert small["generation_pickled_bytes"] == large["generation_pickled_bytes"] < 4096
    # Tensors, in the narrowest exact dtype: per row 64 prompt tokens (int32 id + bool mask), 64 response tokens
    # (int32 id + bool mask + float32 rollout log-prob), 3 int32 ids and 3 float32 rewards; from 2 ranks of 32
    # rows. Beyond that only the shapes (a few int64s per field).
    payload = 2 * (16 * N // 2) * (64 * (4 + 1) + 64 * (4 + 1 + 4) + 3 * 4 + 3 * 4)
    tensor_bytes = large["generation_gather_bytes"] - large["generation_pickled_bytes"]
    assert payload <= tensor_bytes <= payload + 512
