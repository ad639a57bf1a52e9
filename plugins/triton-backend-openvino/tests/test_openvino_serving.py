"""OpenVINO models served end to end through tritonclient: an ONNX model built here, served as IR
and as ONNX, compared with running both files directly on OpenVINO and on onnxruntime."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from kernel import ModelControlMode
from kernel.testing.clients import serving

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "model_repository"

ADD_SUB_CONFIG = """
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
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 2 kind: KIND_CPU } ]
"""

FIXED_BATCH_CONFIG = """
backend: "openvino"
max_batch_size: 4
"""

PADDING = """
parameters { key: "ENABLE_BATCH_PADDING" value { string_value: "YES" } }
"""

MODELS = ["mlp_ir", "mlp_onnx", "mlp_renamed", "add_sub", "fixed", "padded"]


@pytest.fixture(scope="module")
def served(kit: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One server for the module: the same MLP as IR (no config) and as ONNX, and add/sub IRs
    with a dynamic and with a fixed batch dimension; "misspelt" (an unknown parameter) is left
    unloaded."""
    repo = tmp_path_factory.mktemp("models")
    mlp = kit.mlp_model()
    kit.write_ir(repo, "mlp_ir", mlp, None, batch_layout=True)
    kit.write_onnx(repo, "mlp_onnx", mlp, 'backend: "openvino"\n')
    renamed = 'backend: "openvino"\ndefault_model_filename: "classifier.onnx"\n'
    kit.write_onnx(repo, "mlp_renamed", mlp, renamed, file="classifier.onnx")
    kit.write_ir(repo, "add_sub", kit.add_sub_model(), ADD_SUB_CONFIG)
    fixed = kit.add_sub_model(batch=1)
    kit.write_ir(repo, "fixed", fixed, FIXED_BATCH_CONFIG, batch_layout=True)
    kit.write_ir(repo, "padded", fixed, FIXED_BATCH_CONFIG + PADDING, batch_layout=True)
    misspelt = 'backend: "openvino"\nparameters { key: "NUM_STREAM" value { string_value: "2" } }\n'
    kit.write_ir(repo, "misspelt", mlp, misspelt, batch_layout=True)
    with serving() as serve:
        yield serve(repo, model_control_mode=ModelControlMode.EXPLICIT, load_models=MODELS)


def _tensors(config: dict[str, Any], key: str) -> dict[str, tuple[str, list[int]]]:
    return {t["name"]: (t["data_type"], [int(d) for d in t["dims"]]) for t in config[key]}


@pytest.mark.parametrize(
    ("name", "file"),
    [("mlp_ir", "model.xml"), ("mlp_onnx", "model.onnx"), ("mlp_renamed", "classifier.onnx")],
)
def test_ir_and_onnx_match_openvino_and_onnxruntime(
    kit: Any, served: Any, protocol: str, name: str, file: str
) -> None:
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    got = served.infer(protocol, name, {"X": x})["PROB"]
    assert got.shape == (3, 3) and got.dtype == np.float32
    path = served.repository / name / "1" / file
    np.testing.assert_allclose(got, kit.run_openvino(path, {"X": x})["PROB"], rtol=1e-6)
    reference = kit.run_onnxruntime(kit.mlp_model(), {"X": x})
    if reference is not None:
        # OpenVINO may compute in bf16 where the CPU has it (its default there): a loose match.
        np.testing.assert_allclose(got, reference["PROB"], atol=1e-2)


def test_auto_complete_reads_the_layout(served: Any, protocol: str) -> None:
    """The IR's ``N...`` layout lets it batch (max_batch_size 4, as Triton's default); the ONNX
    file has no layout, so it keeps max_batch_size 0 and its full, dynamic shapes."""
    ir = served.config(protocol, "mlp_ir")
    assert ir["backend"] == "openvino"
    assert ir["max_batch_size"] == 4
    assert "dynamic_batching" in ir
    assert _tensors(ir, "input") == {"X": ("TYPE_FP32", [4])}
    assert _tensors(ir, "output") == {"PROB": ("TYPE_FP32", [3])}
    onnx = served.config(protocol, "mlp_onnx")
    assert onnx.get("max_batch_size", 0) == 0
    assert "dynamic_batching" not in onnx
    assert _tensors(onnx, "input") == {"X": ("TYPE_FP32", [-1, 4])}
    assert _tensors(onnx, "output") == {"PROB": ("TYPE_FP32", [-1, 3])}


def test_add_sub_and_requested_outputs(kit: Any, served: Any, protocol: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(-100, 100, (2, 16)).astype(np.int32)
    b = rng.integers(-100, 100, (2, 16)).astype(np.int32)
    got = served.infer(protocol, "add_sub", {"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(got["OUTPUT0"], a + b)
    np.testing.assert_array_equal(got["OUTPUT1"], a - b)
    reference = kit.run_onnxruntime(kit.add_sub_model(), {"INPUT0": a, "INPUT1": b})
    if reference is not None:
        np.testing.assert_array_equal(got["OUTPUT0"], reference["OUTPUT0"])
    only = served.infer(protocol, "add_sub", {"INPUT0": a, "INPUT1": b}, outputs=["OUTPUT1"])
    assert list(only) == ["OUTPUT1"]


def test_concurrent_requests_are_batched_and_answered_each(served: Any, protocol: str) -> None:
    """Two instances, compiled in parallel, and the dynamic batcher: every client gets its own
    rows back."""
    inputs = [np.full((1 + i % 3, 16), i, np.int32) for i in range(8)]

    def call(a: Any) -> Any:
        return served.infer(protocol, "add_sub", {"INPUT0": a, "INPUT1": a})

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, inputs))
    for a, got in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(got["OUTPUT0"], 2 * a)
        np.testing.assert_array_equal(got["OUTPUT1"], np.zeros_like(a))


def test_fixed_batch_dimension_needs_full_batches_or_padding(served: Any, protocol: str) -> None:
    """A batch-1 model with max_batch_size 4 runs at batch 4 (Triton's rule); smaller batches
    fail unless ENABLE_BATCH_PADDING pads them, and the padding never reaches the client."""
    full = np.arange(64, dtype=np.int32).reshape(4, 16)
    got = served.infer(protocol, "fixed", {"INPUT0": full, "INPUT1": full})
    np.testing.assert_array_equal(got["OUTPUT0"], 2 * full)
    two = full[:2].copy()
    with pytest.raises(InferenceServerException, match="ENABLE_BATCH_PADDING"):
        served.infer(protocol, "fixed", {"INPUT0": two, "INPUT1": two})
    got = served.infer(protocol, "padded", {"INPUT0": two, "INPUT1": two})
    assert got["OUTPUT0"].shape == (2, 16)
    np.testing.assert_array_equal(got["OUTPUT0"], 2 * two)


def test_an_unknown_parameter_is_ignored_as_in_triton(
    served: Any, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = served.client(protocol)
    try:
        with caplog.at_level("WARNING"):
            client.load_model("misspelt")
        x = np.ones((1, 4), np.float32)
        assert served.infer(protocol, "misspelt", {"X": x})["PROB"].shape == (1, 3)
        client.unload_model("misspelt")
    finally:
        client.close()
    assert "unknown parameter 'NUM_STREAM' for the openvino backend is ignored" in caplog.text


def test_example_model_is_served_and_rebuilt_by_its_script(
    kit: Any, protocol: str, tmp_path: Path
) -> None:
    """The committed example serves as documented, and examples/build_openvino_models.py
    rebuilds a model that computes the same (bytes may differ between OpenVINO versions)."""
    spec = importlib.util.spec_from_file_location(
        "build_openvino_models", EXAMPLES.parent / "build_openvino_models.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.build(tmp_path)
    committed, rebuilt = EXAMPLES / "openvino_classifier", tmp_path / "openvino_classifier"
    assert (rebuilt / "config.pbtxt").read_text() == (committed / "config.pbtxt").read_text()

    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    with serving() as serve:
        served = serve(
            EXAMPLES,
            model_control_mode=ModelControlMode.EXPLICIT,
            load_models=["openvino_classifier"],
        )
        got = served.infer(protocol, "openvino_classifier", {"X": x})["PROB"]
    for folder in (committed, rebuilt):
        want = kit.run_openvino(folder / "1" / "model.xml", {"X": x})["PROB"]
        np.testing.assert_allclose(got, want, rtol=1e-6)
    reference = kit.run_onnxruntime(script.classifier_onnx(), {"X": x})
    if reference is not None:
        np.testing.assert_allclose(got, reference["PROB"], atol=1e-2)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-2)
