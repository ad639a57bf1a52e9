"""How a batch runs: inputs over the requests' memory, one forward call, outputs split back;
without autograd, in the modes the config asks for."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kernel import InferenceRequest, InferenceResponse, KernelError, ModelConfig, Status
from kernel.config import DataType, ModelInput, ModelOutput, ModelParameter


class Recorder:
    """Stands in for a module's forward: records each call's arguments and torch's modes."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.calls: list[tuple[Any, ...]] = []
        self.modes: list[dict[str, bool]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        self.modes.append(
            {
                "grad": torch.is_grad_enabled(),
                "inference": torch.is_inference_mode_enabled(),
                "optimized": torch._C._get_graph_executor_optimize(),
            }
        )
        return self.call(*args)


def _config(
    name: str, max_batch_size: int = 8, inputs: int = 2, parameters: dict[str, str] | None = None
) -> ModelConfig:
    tensor = {"data_type": DataType.TYPE_FP32, "dims": [4]}
    return ModelConfig(
        name=name,
        backend="pytorch",
        max_batch_size=max_batch_size,
        input=[ModelInput(name=f"INPUT__{i}", **tensor) for i in range(inputs)],
        output=[ModelOutput(name=f"OUTPUT__{i}", **tensor) for i in range(2)],
        parameters={k: ModelParameter(string_value=v) for k, v in (parameters or {}).items()},
    )


def _request(*arrays: np.ndarray, outputs: tuple[str, ...] = ()) -> InferenceRequest:
    request = InferenceRequest(
        "m", {f"INPUT__{i}": a for i, a in enumerate(arrays)}, requested_output_names=outputs
    )
    request.batch_size = arrays[0].shape[0]  # the kernel sets it when it accepts the request
    return request


def _read_only(array: np.ndarray) -> np.ndarray:
    """An array over immutable bytes, as the frontends decode wire tensors."""
    return np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)


def _answer(request: InferenceRequest) -> InferenceResponse:
    return asyncio.run(request.final_response())


def _recording(kit: Any, tmp_path: Path, module: Any, config: ModelConfig) -> tuple[Any, Recorder]:
    instance = kit.unit_instance(kit.unit_model(tmp_path / config.name, module, config))
    recorder = Recorder(instance.program.call)
    instance.program = dataclasses.replace(instance.program, call=recorder)
    return instance, recorder


def test_batch_runs_as_one_call_and_splits_per_request(kit: Any, tmp_path: Path) -> None:
    instance, recorder = _recording(kit, tmp_path, kit.scripted(kit.AddSub()), _config("add"))
    rng = np.random.default_rng(0)
    pairs = [rng.standard_normal((2, rows, 4)).astype(np.float32) for rows in (1, 3, 2)]
    requests = [_request(a, b) for a, b in pairs]
    requests[1] = _request(*pairs[1], outputs=("OUTPUT__1",))
    instance.execute(requests)

    assert len(recorder.calls) == 1
    assert [tuple(t.shape) for t in recorder.calls[0]] == [(6, 4), (6, 4)]
    for request, (a, b) in zip(requests, pairs, strict=True):
        response = _answer(request)
        assert response.error is None
        if request.requested_output_names:
            assert list(response.outputs) == ["OUTPUT__1"]
        else:
            np.testing.assert_array_equal(response.outputs["OUTPUT__0"], a + b)
        np.testing.assert_array_equal(response.outputs["OUTPUT__1"], a - b)


def test_model_without_batching_runs_each_request(kit: Any, tmp_path: Path) -> None:
    config = _config("one_by_one", max_batch_size=0)
    instance, recorder = _recording(kit, tmp_path, kit.scripted(kit.AddSub()), config)
    a = np.ones(4, np.float32)
    requests = [_request(a, a * i) for i in range(3)]
    instance.execute(requests)
    assert len(recorder.calls) == 3
    for i, request in enumerate(requests):
        np.testing.assert_array_equal(_answer(request).outputs["OUTPUT__0"], a + a * i)


def test_read_only_inputs_reach_the_model_uncopied(kit: Any, tmp_path: Path) -> None:
    instance, recorder = _recording(kit, tmp_path, kit.scripted(kit.AddSub()), _config("zc"))
    a = _read_only(np.arange(8, dtype=np.float32).reshape(2, 4))
    assert not a.flags.writeable
    request = _request(a, a)
    instance.execute([request])  # pytest turns torch's non-writable warning into an error
    assert recorder.calls[0][0].data_ptr() == a.ctypes.data
    np.testing.assert_array_equal(_answer(request).outputs["OUTPUT__0"], a + a)


def test_a_model_writing_its_input_gets_a_copy(kit: Any, tmp_path: Path) -> None:
    config = _config("in_place", inputs=1)
    config.output = config.output[:1]
    instance, recorder = _recording(kit, tmp_path, kit.scripted(kit.InPlace()), config)
    original = np.arange(8, dtype=np.float32).reshape(2, 4)
    a = _read_only(original)
    request = _request(a)
    instance.execute([request])
    assert recorder.calls[0][0].data_ptr() != a.ctypes.data
    np.testing.assert_array_equal(a, original)  # the request's memory is untouched
    np.testing.assert_array_equal(_answer(request).outputs["OUTPUT__0"], original * 2 + 1)


@pytest.mark.parametrize(
    ("parameters", "inference", "optimized"),
    [
        ({}, True, True),
        ({"INFERENCE_MODE": "false", "DISABLE_OPTIMIZED_EXECUTION": "true"}, False, False),
    ],
)
def test_forward_runs_without_autograd_in_the_configured_modes(
    kit: Any, tmp_path: Path, parameters: dict[str, str], inference: bool, optimized: bool
) -> None:
    """A module traced and run with autograd on serves with autograd off, in either mode."""
    example = torch.zeros(2, 4)
    module = kit.traced(kit.Classifier(), example)
    module(example)  # the user's own call, with autograd
    config = _config("modes", inputs=1, parameters=parameters)
    config.input[0].name = "x"
    config.output = [ModelOutput(name="y", data_type=DataType.TYPE_FP32, dims=[3])]
    instance, recorder = _recording(kit, tmp_path, module, config)
    x = np.ones((2, 4), np.float32)
    for _ in range(2):  # the profiling executor specializes on its second run
        request = InferenceRequest("m", {"x": x})
        request.batch_size = 2
        instance.execute([request])
        response = _answer(request)
        assert response.error is None
        want = kit.reference(kit.Classifier(), x).numpy()
        np.testing.assert_allclose(response.outputs["y"], want, rtol=1e-6)
    assert recorder.modes[-1] == {"grad": False, "inference": inference, "optimized": optimized}


def test_output_datatype_contradicting_the_config_fails_the_request(
    kit: Any, tmp_path: Path
) -> None:
    config = _config("wrong_type")
    config.output[0].data_type = DataType.TYPE_INT32
    instance = kit.unit_instance(kit.unit_model(tmp_path / "m", kit.scripted(kit.AddSub()), config))
    a = np.ones((1, 4), np.float32)
    with pytest.raises(Exception, match="expects datatype TYPE_INT32 for output 'OUTPUT__0'"):
        instance.execute([_request(a, a)])


def test_a_missing_leading_argument_is_named_and_a_missing_trailing_one_left_out(
    kit: Any, tmp_path: Path
) -> None:
    """Inputs go by position: a request without the first argument's input is refused naming
    the argument; one without only the last leaves it to the forward (here: refused by the
    module itself, which has no default), not to a comparison of tensors with None."""
    instance, recorder = _recording(kit, tmp_path, kit.scripted(kit.AddSub()), _config("gaps"))
    b = np.ones((1, 4), np.float32)
    request = InferenceRequest("m", {"INPUT__1": b})
    request.batch_size = 1
    with pytest.raises(KernelError, match="no input is given for argument 'a'") as caught:
        instance.execute([request])
    assert caught.value.status is Status.INVALID_ARG
    assert recorder.calls == []

    request = InferenceRequest("m", {"INPUT__0": b})
    request.batch_size = 1
    with pytest.raises(KernelError):  # the scripted forward wants both
        instance.execute([request])
    assert [len(call) for call in recorder.calls] == [1]  # the trailing argument left out
