"""How a batch runs: one gathered inference per batch on the async infer queue, inputs shared with
OpenVINO rather than copied, outputs split back per request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernel import Status

_ADD_SUB = """
backend: "openvino"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
"""


class RecordingQueue:
    """Wraps an ``ov.AsyncInferQueue`` and records the tensors of each started inference."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.started: list[dict[str, Any]] = []

    def start_async(self, inputs: dict[str, Any], userdata: Any) -> None:
        self.started.append(dict(inputs))
        self.queue.start_async(inputs, userdata)

    def wait_all(self) -> None:
        self.queue.wait_all()

    def __len__(self) -> int:
        return len(self.queue)


def _recorded(instance: Any) -> RecordingQueue:
    instance.queue = RecordingQueue(instance.queue)
    return instance.queue  # type: ignore[no-any-return]


@pytest.fixture
def add_sub(kit: Any, tmp_path: Path) -> Iterator[Any]:
    kit.to_ir(kit.add_sub_model(), tmp_path / "1" / "model.xml")
    instance = kit.unit_instance(tmp_path, kit.parse_config(_ADD_SUB))
    yield instance
    instance.finalize()


def _pair(rows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {n: rng.integers(-50, 50, (rows, 16)).astype(np.int32) for n in ("INPUT0", "INPUT1")}


def test_batch_is_gathered_once_run_once_and_split_per_request(kit: Any, add_sub: Any) -> None:
    queue = _recorded(add_sub)
    feeds = [_pair(1, 1), _pair(3, 2), _pair(2, 3)]
    requests = [
        kit.request(feeds[0], rows=1),
        kit.request(feeds[1], rows=3, outputs=("OUTPUT1",)),
        kit.request(feeds[2], rows=2),
    ]
    add_sub.execute(requests)
    assert len(queue.started) == 1
    assert list(queue.started[0]["INPUT0"].shape) == [6, 16]
    for request, feed in zip(requests, feeds, strict=True):
        response = kit.answer(request)
        assert response.error is None
        a, b = feed["INPUT0"], feed["INPUT1"]
        np.testing.assert_array_equal(response.outputs["OUTPUT1"], a - b)
        if request.requested_output_names:
            assert list(response.outputs) == ["OUTPUT1"]
        else:
            np.testing.assert_array_equal(response.outputs["OUTPUT0"], a + b)
    assert add_sub.context.take_reported_times() is not None


def test_lone_request_reaches_openvino_without_a_copy(kit: Any, add_sub: Any) -> None:
    """A read-only view of the wire bytes, as the kernel hands it, is shared, not copied."""
    queue = _recorded(add_sub)
    wire = np.arange(32, dtype=np.int32).tobytes()
    view = np.frombuffer(wire, dtype=np.int32).reshape(2, 16)
    assert not view.flags.writeable
    request = kit.request({"INPUT0": view, "INPUT1": view}, rows=2)
    add_sub.execute([request])
    assert np.shares_memory(queue.started[0]["INPUT0"].data, view)
    np.testing.assert_array_equal(kit.answer(request).outputs["OUTPUT0"], 2 * view)


def test_model_without_batching_runs_each_request_as_its_own_inference(
    kit: Any, tmp_path: Path
) -> None:
    model = kit.mlp_model()
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.onnx").write_bytes(model.SerializeToString())
    instance = kit.unit_instance(tmp_path, kit.parse_config('backend: "openvino"'))
    try:
        queue = _recorded(instance)
        rng = np.random.default_rng(2)
        feeds = [rng.standard_normal((rows, 4)).astype(np.float32) for rows in (1, 4, 2)]
        requests = [kit.request({"X": x}) for x in feeds]
        instance.execute(requests)
        assert len(queue.started) == 3
        for request, x in zip(requests, feeds, strict=True):
            want = kit.run_openvino(tmp_path / "1" / "model.onnx", {"X": x})["PROB"]
            np.testing.assert_allclose(kit.answer(request).outputs["PROB"], want, rtol=1e-6)

        # One request OpenVINO refuses (wrong shape) is answered with the error, alone.
        bad = kit.request({"X": np.ones((2, 5), np.float32)})
        good = kit.request({"X": feeds[0]})
        instance.execute([bad, good])
        error = kit.answer(bad).error
        assert error is not None and error.status == Status.INVALID_ARG
        assert kit.answer(good).error is None
    finally:
        instance.finalize()


class FailingQueue(RecordingQueue):
    """A queue whose inferences fail inside OpenVINO: nothing runs, ``wait_all`` raises."""

    def start_async(self, inputs: dict[str, Any], userdata: Any) -> None:
        self.started.append(dict(inputs))

    def wait_all(self) -> None:
        raise RuntimeError("Exception from src/plugin.cpp:1:\ninference failed\n")


def test_failed_inference_answers_its_requests_and_the_instance_recovers(
    kit: Any, add_sub: Any
) -> None:
    """OpenVINO's queue raises a failure from every later call, so the instance replaces it."""
    add_sub.queue = FailingQueue(add_sub.queue)
    requests = [kit.request(_pair(1, 1), rows=1), kit.request(_pair(2, 2), rows=2)]
    add_sub.execute(requests)
    for request in requests:
        error = kit.answer(request).error
        assert error is not None and error.status == Status.INTERNAL
        assert "inference failed" in str(error) and "Exception from" not in str(error)
    assert not isinstance(add_sub.queue, FailingQueue)
    feed = _pair(2, 3)
    got = kit.run_instance(add_sub, feed, rows=2)
    np.testing.assert_array_equal(got["OUTPUT0"], feed["INPUT0"] + feed["INPUT1"])
