"""Token-budget packing: a partition of the rows within the budget, and padding trimming that keeps the inputs."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from gspo.trainer.batch import RolloutBatch
from gspo.trainer.packing import pack_by_tokens, pack_micro_batches, sequence_lengths, trim_padding


def _check_partition(groups, lengths, max_tokens):
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))  # every index exactly once
    for group in groups:
        assert group and group == sorted(group)
        longest = max(lengths[i] for i in group)
        # Padded size (rows x longest) within budget, so the real-token sum is too; only a lone row may exceed it.
        assert len(group) * longest <= max_tokens or len(group) == 1
        assert sum(lengths[i] for i in group) <= max_tokens or len(group) == 1


@pytest.mark.parametrize("seed", range(20))
def test_groups_partition_the_rows_within_the_budget(seed):
    rng = random.Random(seed)
    max_tokens = rng.randint(8, 200)
    lengths = [rng.randint(1, max_tokens) for _ in range(rng.randint(1, 60))]
    groups = pack_by_tokens(lengths, max_tokens)
    _check_partition(groups, lengths, max_tokens)
    assert len(groups) >= -(-sum(lengths) // max_tokens)
    assert pack_by_tokens(list(lengths), max_tokens) == groups  # deterministic


def test_balanced_and_similar_lengths_together():
    assert pack_by_tokens([4] * 8, 8) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # Two micro-batches either way; the cap is lowered from 15 to 10 so they hold 2 + 2 rows, not 3 + 1.
    assert pack_by_tokens([5] * 4, 15) == [[0, 1], [2, 3]]
    # Longest first, neighbours in length share a micro-batch.
    assert pack_by_tokens([1, 9, 2, 8, 3, 7], 16) == [[1], [3, 5], [0, 2, 4]]
    # One long row is not padded with seven short ones into a 8 x 9 rectangle, though their real sum is 16.
    assert pack_by_tokens([9] + [1] * 7, 16) == [[0], [1, 2, 3, 4, 5, 6, 7]]


def test_one_sequence_per_micro_batch_when_no_pair_fits():
    assert pack_by_tokens([7, 5, 7, 6, 8, 9], 9) == [[5], [4], [0], [2], [3], [1]]


def test_an_over_long_sequence_gets_its_own_micro_batch():
    lengths = [3, 50, 4, 2, 30]
    groups = pack_by_tokens(lengths, 10)
    assert groups[:2] == [[1], [4]]
    _check_partition(groups, lengths, 10)


def test_edge_cases():
    assert pack_by_tokens([], 10) == []
    assert pack_by_tokens([3], 1) == [[0]]
    with pytest.raises(ValueError):
        pack_by_tokens([1, 2], 0)
    with pytest.raises(ValueError):
        pack_by_tokens([1, -2], 5)


def _batch():
    prompt_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]])
    response_mask = torch.tensor([[1.0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]])
    ids = torch.arange(1, 28).reshape(3, 9)
    return RolloutBatch(prompt_ids=ids[:, :4] * prompt_mask, prompt_mask=prompt_mask,
                        response_ids=(ids[:, 4:] * response_mask).long(), response_mask=response_mask,
                        group_ids=torch.zeros(3, dtype=torch.long), prompt_index=torch.arange(3),
                        advantages=torch.tensor([1.0, 2.0, 3.0]), old_log_probs=-response_mask,
                        ref_log_probs=-2 * response_mask)


def test_trim_padding_drops_all_padding_columns_and_keeps_the_inputs():
    batch = _batch()
    trimmed = trim_padding(batch)
    assert trimmed.prompt_ids.shape == (3, 3) and trimmed.response_ids.shape == (3, 3)
    assert trimmed.old_log_probs.shape == trimmed.ref_log_probs.shape == (3, 3)
    full, cut = batch.model_inputs(), trimmed.model_inputs()
    for name in full:  # the kept columns carry the same ids, mask and positions
        torch.testing.assert_close(cut[name], full[name][:, 1:7])
    torch.testing.assert_close(trimmed.advantages, batch.advantages)
    assert trim_padding(trimmed) is trimmed  # nothing left to trim


def test_trim_padding_keeps_one_column_each_side():
    row = _batch().select(torch.tensor([0]))
    empty = trim_padding(replace(row, prompt_mask=torch.zeros(1, 4, dtype=torch.long), response_mask=torch.zeros(1, 5)))
    assert empty.prompt_ids.shape == (1, 1) and empty.response_ids.shape == (1, 1)


def test_pack_micro_batches_covers_every_row_once():
    batch = _batch()
    assert sequence_lengths(batch) == [4, 4, 4]
    parts = pack_micro_batches(batch, 8)
    assert sorted(torch.cat([index for index, _ in parts]).tolist()) == [0, 1, 2]
    for index, micro in parts:
        torch.testing.assert_close(micro.advantages, batch.advantages[index])
        assert micro.prompt_mask.sum() + micro.response_mask.sum() <= 8
