"""How a batch of requests runs: one concatenation, one ``session.run``, split per request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernel import InferenceRequest, InferenceResponse, ModelConfig
from kernel.config import DataType, ModelInput, ModelOutput, ModelTensorReshape


class RecordingSession:
    """Wraps an ONNX session and records what each ``run`` was given."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(self, names: list[str], feeds: dict[str, Any], options: Any = None) -> Any:
        self.calls.append((list(names), dict(feeds)))
        return self.session.run(names, feeds, options)

    def get_providers(self) -> list[str]:
        return list(self.session.get_providers())


def _config(name: str, max_batch_size: int = 8) -> ModelConfig:
    tensor = {"data_type": DataType.TYPE_INT32, "dims": [16]}
    return ModelConfig(
        name=name,
        backend="onnxruntime",
        max_batch_size=max_batch_size,
        input=[ModelInput(name=n, **tensor) for n in ("INPUT0", "INPUT1")],  # type: ignore[arg-type]
        output=[ModelOutput(name=n, **tensor) for n in ("OUTPUT0", "OUTPUT1")],  # type: ignore[arg-type]
    )


def _request(rows: int, seed: int, outputs: tuple[str, ...] = ()) -> InferenceRequest:
    rng = np.random.default_rng(seed)
    inputs = {n: rng.integers(-50, 50, (rows, 16)).astype(np.int32) for n in ("INPUT0", "INPUT1")}
    request = InferenceRequest("add_sub", inputs, requested_output_names=outputs)
    request.batch_size = rows  # the kernel sets it when it accepts the request
    return request


def _answer(request: InferenceRequest) -> InferenceResponse:
    return asyncio.run(request.final_response())


@pytest.fixture
def add_sub(kit: Any, tmp_path: Path) -> tuple[Any, RecordingSession]:
    instance = kit.unit_instance(tmp_path / "add_sub", kit.add_sub_model(), _config("add_sub"))
    recorder = RecordingSession(instance.session)
    instance.session = recorder
    return instance, recorder


def test_batch_is_concatenated_once_run_once_and_split_per_request(
    kit: Any, add_sub: tuple[Any, RecordingSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, recorder = add_sub
    concatenations: list[int] = []
    real = np.concatenate

    def counting(arrays: Any, *args: Any, **kwargs: Any) -> Any:
        concatenations.append(len(arrays))
        return real(arrays, *args, **kwargs)

    requests = [_request(1, 1), _request(3, 2, ("OUTPUT1",)), _request(2, 3)]
    monkeypatch.setattr(np, "concatenate", counting)
    instance.execute(requests)
    monkeypatch.undo()

    assert concatenations == [3, 3]  # one per input, over the three requests
    assert len(recorder.calls) == 1
    names, feeds = recorder.calls[0]
    assert names == ["OUTPUT0", "OUTPUT1"]
    assert feeds["INPUT0"].shape == (6, 16)
    for request in requests:
        response = _answer(request)
        assert response.error is None
        want = kit.run_direct(kit.add_sub_model(), request.inputs)
        expected = request.requested_output_names or ("OUTPUT0", "OUTPUT1")
        assert sorted(response.outputs) == sorted(expected)
        for name in expected:
            np.testing.assert_array_equal(response.outputs[name], want[name])
    times = instance.context.take_reported_times()
    assert times is not None and all(t >= 0 for t in times) and times[1] > 0


def test_single_request_arrays_go_straight_to_the_session(
    add_sub: tuple[Any, RecordingSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, recorder = add_sub

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a lone request must not be concatenated")

    request = _request(4, 9, ("OUTPUT0",))
    readonly = {n: np.frombuffer(a.tobytes(), np.int32).reshape(a.shape) for n, a in
                request.inputs.items()}  # fmt: skip
    request.inputs.update(readonly)  # read-only, like arrays viewing the wire bytes
    monkeypatch.setattr(np, "concatenate", refuse)
    instance.execute([request])
    monkeypatch.undo()
    names, feeds = recorder.calls[0]
    assert names == ["OUTPUT0"]  # only what was asked for is computed
    for name, array in readonly.items():
        assert feeds[name] is array  # contiguous: handed over as is, not copied
    response = _answer(request)
    np.testing.assert_array_equal(
        response.outputs["OUTPUT0"], readonly["INPUT0"] + readonly["INPUT1"]
    )


def test_non_contiguous_input_is_made_contiguous(add_sub: tuple[Any, RecordingSession]) -> None:
    instance, recorder = add_sub
    request = _request(2, 4)
    wide = np.zeros((2, 32), np.int32)
    wide[:, ::2] = request.inputs["INPUT0"]
    request.inputs["INPUT0"] = wide[:, ::2]
    instance.execute([request])
    assert recorder.calls[0][1]["INPUT0"].flags.c_contiguous
    assert _answer(request).error is None


def test_model_without_batching_runs_requests_one_by_one(kit: Any, tmp_path: Path) -> None:
    model = kit.add_sub_model(batch=False)
    instance = kit.unit_instance(tmp_path / "m", model, _config("add_sub", max_batch_size=0))
    recorder = RecordingSession(instance.session)
    instance.session = recorder
    requests = []
    for seed in range(2):
        request = _request(1, seed)
        request.inputs = {n: a.reshape(16) for n, a in request.inputs.items()}
        requests.append(request)
    instance.execute(requests)
    assert len(recorder.calls) == 2
    for request in requests:
        np.testing.assert_array_equal(
            _answer(request).outputs["OUTPUT1"],
            request.inputs["INPUT0"] - request.inputs["INPUT1"],
        )


def test_failing_run_answers_every_request_with_the_error(
    add_sub: tuple[Any, RecordingSession],
) -> None:
    instance, _ = add_sub
    request = _request(1, 0)
    request.inputs["INPUT0"] = np.zeros((1, 3), np.int32)  # the kernel would have refused it
    with pytest.raises(Exception, match="onnxruntime"):
        instance.execute([request])


def test_reshape_of_inputs_and_outputs(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    """The config's [4,4] tensors are the model's [16] ones (``reshape``), both ways."""
    config = kit.add_sub_config(dims="[ 4, 4 ]").replace(
        "dims: [ 4, 4 ] }", "dims: [ 4, 4 ] reshape { shape: [ 16 ] } }"
    )
    kit.write_onnx(repo, "reshaped", kit.add_sub_model(), config)
    served = serve(repo)
    a = np.arange(32, dtype=np.int32).reshape(2, 4, 4)
    got = served.infer(protocol, "reshaped", {"INPUT0": a, "INPUT1": a})
    assert got["OUTPUT0"].shape == (2, 4, 4)
    np.testing.assert_array_equal(got["OUTPUT0"], 2 * a)


def test_two_instances_serve(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    config = kit.add_sub_config(extra="instance_group [ { count: 2 kind: KIND_CPU } ]")
    kit.write_onnx(repo, "twice", kit.add_sub_model(), config)
    served = serve(repo)
    instances = served.server.route("twice").instances
    assert len(instances) == 2
    assert instances[0].instance.session is not instances[1].instance.session
    one = np.ones((1, 16), np.int32)
    for _ in range(4):
        got = served.infer(protocol, "twice", {"INPUT0": one, "INPUT1": one})
        np.testing.assert_array_equal(got["OUTPUT0"], 2 * one)


def test_output_reshape_helper_keeps_scalar_outputs_as_configured(kit: Any, tmp_path: Path) -> None:
    """A scalar model output is returned with the config's dims [1] (Triton's rule)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])
    s = helper.make_tensor_value_info("S", TensorProto.FLOAT, [])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X"], ["S"], keepdims=0)], "sum", [x], [s]
    )
    config = ModelConfig(
        name="sum",
        backend="onnxruntime",
        input=[ModelInput(name="X", data_type=DataType.TYPE_FP32, dims=[4])],
        output=[
            ModelOutput(
                name="S", data_type=DataType.TYPE_FP32, dims=[1],
                reshape=ModelTensorReshape(shape=[]),
            )
        ],
    )  # fmt: skip
    instance = kit.unit_instance(tmp_path / "sum", kit.finish(graph), config)
    request = InferenceRequest("sum", {"X": np.array([1, 2, 3, 4], np.float32)})
    instance.execute([request])
    np.testing.assert_array_equal(_answer(request).outputs["S"], np.array([10], np.float32))
