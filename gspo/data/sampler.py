"""Deterministic, resumable stream of dataset indices."""

from __future__ import annotations

from typing import Any

import torch


class PromptSampler:
    """Endless stream of indices into a dataset of ``num_items``, in epochs.

    Epoch ``e`` visits every index once, in the order
    ``torch.randperm(num_items, generator=torch.Generator().manual_seed(seed + e))``
    (or ``0..num_items-1`` when ``shuffle=False``). :meth:`take` crosses epoch
    boundaries transparently. The full state is ``(epoch, position, seed)``, so
    :meth:`state_dict` / :meth:`load_state_dict` resume exactly.

    ``epoch`` and ``position`` describe the *next* index to be returned: after
    exactly one epoch has been taken, ``epoch == 1`` and ``position == 0``.

    >>> s = PromptSampler(3, seed=0, shuffle=False)
    >>> s.take(4), s.epoch, s.position
    ([0, 1, 2, 0], 1, 1)
    """

    def __init__(self, num_items: int, seed: int, shuffle: bool = True) -> None:
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items <= 0:
            raise ValueError(f"num_items must be a positive int, got {num_items!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self._epoch = 0
        self._position = 0
        self._order: list[int] | None = None  # order of self._epoch, built lazily

    @property
    def epoch(self) -> int:
        """0-based epoch of the next index."""
        return self._epoch

    @property
    def position(self) -> int:
        """Offset of the next index within its epoch, in ``[0, num_items)``."""
        return self._position

    def epoch_order(self, epoch: int) -> list[int]:
        """The full index order of ``epoch`` (a permutation of ``range(num_items)``)."""
        if not self.shuffle:
            return list(range(self.num_items))
        gen = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_items, generator=gen).tolist()

    def take(self, k: int) -> list[int]:
        """Return the next ``k`` indices (``k`` may exceed ``num_items``) and advance."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        out: list[int] = []
        while len(out) < k:
            if self._order is None:
                self._order = self.epoch_order(self._epoch)
            n = min(k - len(out), self.num_items - self._position)
            out.extend(self._order[self._position : self._position + n])
            self._position += n
            if self._position == self.num_items:
                self._epoch += 1
                self._position = 0
                self._order = None
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain-python state: epoch, position, seed, plus num_items/shuffle for validation."""
        return {
            "epoch": self._epoch,
            "position": self._position,
            "seed": self.seed,
            "num_items": self.num_items,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the saved seed wins over the constructor's.

        Raises ValueError when the saved ``num_items``/``shuffle`` differ (the
        dataset or ordering changed, so resuming could not continue exactly).
        """
        for key in ("num_items", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]!r} but this sampler has {key}={getattr(self, key)!r}; "
                    "cannot resume the same order"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.num_items:
            raise ValueError(f"invalid sampler state: epoch={epoch}, position={position}, num_items={self.num_items}")
        self.seed = int(state["seed"])
        self._epoch = epoch
        self._position = position
        self._order = None
