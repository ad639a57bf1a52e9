"""Decoupled Python models over a gRPC stream, in both execution modes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from kernel.testing import RunningServer


def _data(results: list[Any]) -> list[Any]:
    """The results that carry outputs (the last one is the empty final response)."""
    return [r for r in results if r.as_numpy("OUT") is not None]


def test_repeat_streams_one_response_per_element(served: RunningServer, helpers: Any) -> None:
    values = np.array([4, 2, 0, 7], dtype=np.int32)
    delays = np.array([1, 5, 1, 2], dtype=np.uint32)
    results = helpers.grpc_stream(served, "python_repeat", {"IN": values, "DELAY": delays})
    data = _data(results)
    assert [int(r.as_numpy("OUT")[0]) for r in data] == values.tolist()
    assert [int(r.as_numpy("IDX")[0]) for r in data] == [0, 1, 2, 3]
    assert results[-1].as_numpy("OUT") is None  # the final flag came without data


def test_repeat_without_elements_sends_only_the_final_flag(
    served: RunningServer, helpers: Any
) -> None:
    results = helpers.grpc_stream(served, "python_repeat", {"IN": np.zeros(0, np.int32)})
    assert len(results) == 1 and results[0].as_numpy("OUT") is None


def test_repeat_error_response(served: RunningServer, helpers: Any) -> None:
    results = helpers.grpc_stream(
        served,
        "python_repeat",
        {"IN": np.array([1, 2], np.int32), "DELAY": np.array([1], np.uint32)},
    )
    assert isinstance(results[0], InferenceServerException)
    assert "expected IN and DELAY shape to match" in results[0].message()


def test_async_decoupled_execute(served: RunningServer, helpers: Any) -> None:
    values = np.array([3, 1, 2], dtype=np.int32)
    results = helpers.grpc_stream(served, "python_async_repeat", {"IN": values})
    assert [int(r.as_numpy("OUT")[0]) for r in _data(results)] == values.tolist()


def test_decoupled_model_refuses_plain_infer(served: RunningServer, helpers: Any) -> None:
    with pytest.raises(InferenceServerException):
        helpers.grpc_infer(served, "python_repeat", {"IN": np.array([1], np.int32)})
