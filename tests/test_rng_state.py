"""RNG states survive the trip through JSON and tensor files: the draws after a restore repeat exactly."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from gspo.rng_state import (
    numpy_rng_state,
    python_rng_from_json,
    python_rng_to_json,
    restore_numpy_rng_state,
    restore_torch_rng_state,
    torch_rng_state,
)


def test_python_state_round_trips_through_json():
    rng = random.Random(3)
    saved = json.loads(json.dumps(python_rng_to_json(rng.getstate())))
    expected = [rng.random() for _ in range(5)]
    rng.setstate(python_rng_from_json(saved))
    assert [rng.random() for _ in range(5)] == expected


def test_torch_and_numpy_states_restore_the_same_draws(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    torch.save(torch_rng_state(), tmp_path / "rng.pt")
    numpy_key, numpy_rest = numpy_rng_state()
    numpy_rest = json.loads(json.dumps(numpy_rest))
    expected = torch.rand(4), np.random.rand(4)
    restore_torch_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    restore_numpy_rng_state(numpy_key, numpy_rest)
    assert torch.equal(torch.rand(4), expected[0]) and np.array_equal(np.random.rand(4), expected[1])
