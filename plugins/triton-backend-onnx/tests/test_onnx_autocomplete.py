"""Auto-complete from the model file, and configs that contradict the model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from kernel import ModelControlMode


def _tensors(config: dict[str, Any], key: str) -> dict[str, tuple[str, list[int]]]:
    return {t["name"]: (t["data_type"], [int(d) for d in t["dims"]]) for t in config[key]}


def test_model_without_config_serves_with_everything_from_the_model(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    model = kit.mlp_model()
    kit.write_onnx(repo, "bare", model, None)
    served = serve(repo)
    config = served.config(protocol, "bare")
    assert config["backend"] == "onnxruntime"
    assert config["platform"] == "onnxruntime_onnx"
    # Every tensor has a dynamic first dim: Triton's default-max-batch-size (4) and an empty
    # dynamic_batching are filled in, and dims lose the batch dim.
    assert config["max_batch_size"] == 4
    assert "dynamic_batching" in config
    assert _tensors(config, "input") == {"X": ("TYPE_FP32", [4])}
    assert _tensors(config, "output") == {"PROB": ("TYPE_FP32", [3])}
    x = np.ones((4, 4), np.float32)
    got = served.infer(protocol, "bare", {"X": x})["PROB"]
    np.testing.assert_allclose(got, kit.run_direct(model, {"X": x})["PROB"], rtol=1e-5)


def test_model_without_batch_dimension_gets_max_batch_size_zero(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    kit.write_onnx(repo, "fixed", kit.add_sub_model("INT32", 4, batch=False), None)
    served = serve(repo)
    config = served.config(protocol, "fixed")
    assert config.get("max_batch_size", 0) == 0
    assert "dynamic_batching" not in config
    assert _tensors(config, "input")["INPUT0"] == ("TYPE_INT32", [4])
    a = np.array([1, 2, 3, 4], np.int32)
    got = served.infer(protocol, "fixed", {"INPUT0": a, "INPUT1": a})
    np.testing.assert_array_equal(got["OUTPUT1"], np.zeros(4, np.int32))


def test_backend_config_default_max_batch_size(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    kit.write_onnx(repo, "bare", kit.mlp_model(), None)
    served = serve(repo, backend_config={"onnxruntime": {"default-max-batch-size": "32"}})
    assert served.config(protocol, "bare")["max_batch_size"] == 32


def test_partial_config_is_completed_never_overridden(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    config = """
backend: "onnxruntime"
max_batch_size: 2
output [ { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""
    kit.write_onnx(repo, "partial", kit.add_sub_model(), config)
    served = serve(repo)
    completed = served.config(protocol, "partial")
    assert completed["max_batch_size"] == 2  # the user's value stays
    assert _tensors(completed, "output") == {"OUTPUT1": ("TYPE_INT32", [16])}  # not extended
    assert _tensors(completed, "input") == {
        "INPUT0": ("TYPE_INT32", [16]),
        "INPUT1": ("TYPE_INT32", [16]),
    }
    assert [g["count"] for g in completed["instance_group"]] == [2]
    one = np.ones((2, 16), np.int32)
    got = served.infer(protocol, "partial", {"INPUT0": one, "INPUT1": one})
    assert list(got) == ["OUTPUT1"]


def _load_error(served: Any, protocol: str, name: str) -> str:
    """The message of a failed explicit load, as the client sees it."""
    client = served.client(protocol)
    try:
        with pytest.raises(InferenceServerException) as failure:
            client.load_model(name)
        return str(failure.value)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("dims", "tensor", "model_shape", "config_shape"),
    [
        ("[ 8 ]", "INPUT0", "[-1,16]", "[-1,8]"),
        ("[ 16, 1 ]", "INPUT0", "[-1,16]", "[-1,16,1]"),
    ],
)
def test_config_contradicting_the_model_fails_the_load(
    kit: Any,
    repo: Path,
    serve: Callable[..., Any],
    protocol: str,
    dims: str,
    tensor: str,
    model_shape: str,
    config_shape: str,
) -> None:
    kit.write_onnx(repo, "wrong", kit.add_sub_model(), kit.add_sub_config(dims=dims))
    served = serve(repo, model_control_mode=ModelControlMode.EXPLICIT)
    message = _load_error(served, protocol, "wrong")
    assert f"'{tensor}'" in message
    assert model_shape in message and config_shape in message


def test_config_with_wrong_datatype_fails_the_load(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    kit.write_onnx(repo, "wrong", kit.add_sub_model("INT32"), kit.add_sub_config("FP32"))
    served = serve(repo, model_control_mode=ModelControlMode.EXPLICIT)
    message = _load_error(served, protocol, "wrong")
    assert "'INPUT0'" in message and "TYPE_FP32" in message and "TYPE_INT32" in message


def test_config_naming_a_tensor_the_model_lacks_fails_the_load(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    config = kit.add_sub_config().replace('"OUTPUT1"', '"OUTPUT9"')
    kit.write_onnx(repo, "wrong", kit.add_sub_model(), config)
    served = serve(repo, model_control_mode=ModelControlMode.EXPLICIT)
    assert "'OUTPUT9'" in _load_error(served, protocol, "wrong")


def test_batching_config_for_a_model_that_cannot_batch_fails(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    config = 'backend: "onnxruntime"\nmax_batch_size: 8\n'
    kit.write_onnx(repo, "nobatch", kit.add_sub_model(batch=False), config)
    served = serve(repo, model_control_mode=ModelControlMode.EXPLICIT)
    assert "does not support batching" in _load_error(served, protocol, "nobatch")


def test_scalar_batched_tensor_is_completed_with_a_reshape(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    """A [batch] tensor becomes dims [1] with an empty reshape, as in Triton."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch"])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch"])
    graph = helper.make_graph([helper.make_node("Neg", ["X"], ["Y"])], "neg", [x], [y])
    kit.write_onnx(repo, "neg", kit.finish(graph), None)
    served = serve(repo)
    config = served.config(protocol, "neg")
    assert _tensors(config, "input") == {"X": ("TYPE_FP32", [1])}
    assert "reshape" in config["input"][0]
    got = served.infer(protocol, "neg", {"X": np.array([[1.5], [-2.0]], np.float32)})
    np.testing.assert_array_equal(got["Y"], np.array([[-1.5], [2.0]], np.float32))
