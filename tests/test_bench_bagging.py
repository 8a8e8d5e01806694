"""bench.bagging: fits on random subsets of a campaign and the mean of their predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from bench import bagging


def test_subsets_are_distinct_samples_of_the_asked_size_and_reproducible() -> None:
    first = bagging.subsets(100, 3, 0.8, seed=1)
    assert len(first) == 3
    for index in first:
        assert len(index) == 80 and len(set(index.tolist())) == 80
        assert index.min() >= 0 and index.max() < 100 and np.all(np.diff(index) > 0)
    assert not np.array_equal(first[0], first[1])  # each bag its own draw
    again = bagging.subsets(100, 3, 0.8, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


@dataclass
class _Fixed:
    total_ms: float

    def predict_network(self, ops: Any) -> Any:
        return bagging._Total(self.total_ms)


def test_bagged_model_predicts_the_mean_of_its_models() -> None:
    bagged = bagging.BaggedModel([_Fixed(1.0), _Fixed(2.0), _Fixed(4.5)])  # type: ignore[list-item]
    assert bagged.predict_network([]).total_ms == pytest.approx(2.5)
