"""Auto-complete from the model (Triton's rules) and configs that contradict the model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper
from triton_backend_openvino import OpenVinoBackend

from kernel import BackendContext, KernelError, Status

_ADD_SUB = """
backend: "openvino"
max_batch_size: 8
input [
  {{ name: "INPUT0" data_type: {t} dims: {dims} }},
  {{ name: "INPUT1" data_type: {t} dims: {dims} }}
]
output [
  {{ name: "OUTPUT0" data_type: {t} dims: {dims} }},
  {{ name: "{out1}" data_type: {t} dims: {dims} }}
]
"""


def _add_sub_config(
    kit: Any, *, datatype: str = "TYPE_INT32", dims: str = "[ 16 ]", out1: str = "OUTPUT1"
) -> Any:
    return kit.parse_config(_ADD_SUB.format(t=datatype, dims=dims, out1=out1))


def _tensors(tensors: Any) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (t.data_type.name, list(t.dims)) for t in tensors}


def test_partial_config_is_completed_never_overridden(kit: Any, tmp_path: Path) -> None:
    kit.to_ir(kit.add_sub_model(), tmp_path / "1" / "model.xml", batch_layout=True)
    config = kit.parse_config(
        'backend: "openvino"\nmax_batch_size: 2\n'
        'output [ { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]'
    )
    completed = kit.unit_model(tmp_path, config).auto_complete_config(config)
    assert completed.max_batch_size == 2  # the user's value stays
    assert completed.dynamic_batching is not None
    assert _tensors(completed.output) == {"OUTPUT1": ("TYPE_INT32", [16])}  # not extended
    assert _tensors(completed.input) == {
        "INPUT0": ("TYPE_INT32", [16]),
        "INPUT1": ("TYPE_INT32", [16]),
    }


def test_backend_config_sets_the_default_max_batch_size(kit: Any, tmp_path: Path) -> None:
    kit.to_ir(kit.mlp_model(), tmp_path / "1" / "model.xml", batch_layout=True)
    backend = OpenVinoBackend()
    logger = logging.getLogger("test.openvino")
    backend.initialize(BackendContext("openvino", {"default-max-batch-size": "16"}, logger))
    config = kit.parse_config('backend: "openvino"')
    completed = kit.unit_model(tmp_path, config, backend).auto_complete_config(config)
    assert completed.max_batch_size == 16


def test_model_without_layout_keeps_a_set_max_batch_size_with_a_warning(
    kit: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Triton only warns: many IRs batch without saying so in their layout."""
    kit.to_ir(kit.mlp_model(), tmp_path / "1" / "model.xml")
    config = kit.parse_config('backend: "openvino"\nmax_batch_size: 8')
    with caplog.at_level(logging.WARNING):
        instance = kit.unit_instance(tmp_path, config)
    assert "does not name a batch dimension" in caplog.text
    try:
        assert _tensors(instance.context.model.config.input) == {"X": ("TYPE_FP32", [4])}
        x = np.ones((3, 4), np.float32)
        assert kit.run_instance(instance, {"X": x}, rows=3)["PROB"].shape == (3, 3)
    finally:
        instance.finalize()


def test_batch_only_tensor_is_completed_with_a_reshape(kit: Any, tmp_path: Path) -> None:
    """A [batch] tensor becomes dims [1] with an empty reshape, as in Triton."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch"])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch"])
    graph = helper.make_graph([helper.make_node("Neg", ["X"], ["Y"])], "neg", [x], [y])
    kit.to_ir(kit.finish(graph), tmp_path / "1" / "model.xml", batch_layout=True)
    instance = kit.unit_instance(tmp_path, kit.parse_config('backend: "openvino"'))
    try:
        config = instance.context.model.config
        assert _tensors(config.input) == {"X": ("TYPE_FP32", [1])}
        assert config.input[0].reshape is not None and config.output[0].reshape is not None
        got = kit.run_instance(instance, {"X": np.array([[1.5], [-2.0]], np.float32)}, rows=2)
        np.testing.assert_array_equal(got["Y"], np.array([[-1.5], [2.0]], np.float32))
    finally:
        instance.finalize()


@pytest.mark.parametrize(
    ("dims", "model_shape", "config_shape"),
    [("[ 8 ]", "[?,16]", "[-1,8]"), ("[ 16, 1 ]", "[?,16]", "[-1,16,1]")],
)
def test_config_contradicting_the_model_names_tensor_and_shapes(
    kit: Any, tmp_path: Path, dims: str, model_shape: str, config_shape: str
) -> None:
    kit.to_ir(kit.add_sub_model(), tmp_path / "1" / "model.xml")
    model = kit.unit_model(tmp_path, _add_sub_config(kit, dims=dims))
    with pytest.raises(KernelError) as failure:
        model.initialize()
    assert failure.value.status == Status.INVALID_ARG
    message = str(failure.value)
    assert "'INPUT0'" in message
    assert model_shape.replace("?", "-1") in message and config_shape in message


def test_config_naming_a_tensor_the_model_lacks_fails(kit: Any, tmp_path: Path) -> None:
    kit.to_ir(kit.add_sub_model(), tmp_path / "1" / "model.xml")
    model = kit.unit_model(tmp_path, _add_sub_config(kit, out1="OUTPUT9"))
    with pytest.raises(KernelError, match=r"'OUTPUT9'.*no such output"):
        model.initialize()


def test_config_datatype_is_converted_at_the_model_edge(kit: Any, tmp_path: Path) -> None:
    """An FP32 config for an INT32 model runs, converted, as Triton's backend does."""
    kit.to_ir(kit.add_sub_model("INT32"), tmp_path / "1" / "model.xml")
    instance = kit.unit_instance(tmp_path, _add_sub_config(kit, datatype="TYPE_FP32"))
    try:
        a = np.full((1, 16), 3.0, np.float32)
        got = kit.run_instance(instance, {"INPUT0": a, "INPUT1": a}, rows=1)
        assert got["OUTPUT0"].dtype == np.float32
        np.testing.assert_array_equal(got["OUTPUT0"], 2 * a)
    finally:
        instance.finalize()


def test_unsupported_datatype_fails_the_load(kit: Any, tmp_path: Path) -> None:
    kit.to_ir(kit.add_sub_model(), tmp_path / "1" / "model.xml")
    model = kit.unit_model(tmp_path, _add_sub_config(kit, datatype="TYPE_STRING"))
    with pytest.raises(KernelError, match="'INPUT0' has the datatype TYPE_STRING"):
        model.initialize()


def test_missing_model_file_is_unavailable(kit: Any, tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    model = kit.unit_model(tmp_path, kit.parse_config('backend: "openvino"'))
    with pytest.raises(KernelError) as failure:
        model.initialize()
    assert failure.value.status == Status.UNAVAILABLE and "model.xml" in str(failure.value)
