from __future__ import annotations

import pytest

from gspo.rewards import registry


@pytest.fixture
def clean_registry():
    """Lets a test register names freely; the registry is restored afterwards."""
    saved = dict(registry._REGISTRY)
    yield registry._REGISTRY
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
