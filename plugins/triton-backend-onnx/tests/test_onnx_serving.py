"""ONNX models served end to end through tritonclient, compared with a direct onnxruntime run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "model_repository"


@pytest.mark.parametrize(
    ("datatype", "selector"),
    [
        ("INT32", 'backend: "onnxruntime"'),
        ("FP32", 'platform: "onnxruntime_onnx"'),
    ],
)
def test_add_sub_matches_onnxruntime(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str, datatype: str, selector: str
) -> None:
    model = kit.add_sub_model(datatype)
    kit.write_onnx(repo, "add_sub", model, kit.add_sub_config(datatype, selector=selector))
    served = serve(repo)
    dtype = np.int32 if datatype == "INT32" else np.float32
    rng = np.random.default_rng(0)
    a = rng.integers(-100, 100, (3, 16)).astype(dtype)
    b = rng.integers(-100, 100, (3, 16)).astype(dtype)
    got = served.infer(protocol, "add_sub", {"INPUT0": a, "INPUT1": b})
    want = kit.run_direct(model, {"INPUT0": a, "INPUT1": b})
    assert set(got) == {"OUTPUT0", "OUTPUT1"}
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
        assert got[name].dtype == dtype


def test_only_requested_outputs_are_returned(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    kit.write_onnx(repo, "add_sub", kit.add_sub_model(), kit.add_sub_config())
    served = serve(repo)
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    got = served.infer(protocol, "add_sub", {"INPUT0": a, "INPUT1": a}, outputs=["OUTPUT1"])
    assert list(got) == ["OUTPUT1"]
    np.testing.assert_array_equal(got["OUTPUT1"], np.zeros((1, 16), np.int32))


def test_string_identity(kit: Any, repo: Path, serve: Callable[..., Any], protocol: str) -> None:
    config = """
backend: "onnxruntime"
max_batch_size: 4
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
"""
    kit.write_onnx(repo, "strings", kit.string_identity_model(), config)
    served = serve(repo)
    text = np.array([[b"hello", "wörld".encode(), b""]], dtype=np.object_)
    got = served.infer(protocol, "strings", {"INPUT0": text})
    assert got["OUTPUT0"].shape == (1, 3)
    assert list(got["OUTPUT0"].reshape(-1)) == [b"hello", "wörld".encode(), b""]


def test_mlp_with_dynamic_batch_dimension(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    model = kit.mlp_model()
    config = """
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "PROB" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""
    kit.write_onnx(repo, "mlp", model, config)
    served = serve(repo)
    rng = np.random.default_rng(1)
    for rows in (1, 5, 16):
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        got = served.infer(protocol, "mlp", {"X": x})["PROB"]
        np.testing.assert_allclose(got, kit.run_direct(model, {"X": x})["PROB"], rtol=1e-5)
        assert got.shape == (rows, 3)


def test_default_model_filename_is_honoured(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    config = kit.add_sub_config(extra='default_model_filename: "addsub.onnx"')
    kit.write_onnx(repo, "renamed", kit.add_sub_model(), config, file="addsub.onnx")
    served = serve(repo)
    one = np.ones((1, 16), np.int32)
    got = served.infer(protocol, "renamed", {"INPUT0": one, "INPUT1": one})
    np.testing.assert_array_equal(got["OUTPUT0"], 2 * one)


def _save_external(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_external_data_beside_the_model(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str, layout: str
) -> None:
    """Weights in a separate file, beside ``model.onnx`` or in a ``model.onnx/`` directory."""
    model = kit.mlp_model()
    folder = repo / "mlp_external" / "1"
    target = folder / "model.onnx" if layout == "file" else folder / "model.onnx" / "model.onnx"
    _save_external(model, target)
    assert (target.parent / "weights.bin").stat().st_size > 0
    served = serve(repo)  # no config.pbtxt: auto-completed from the model
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    got = served.infer(protocol, "mlp_external", {"X": x})["PROB"]
    np.testing.assert_allclose(got, kit.run_direct(kit.mlp_model(), {"X": x})["PROB"], rtol=1e-5)


def test_example_repository_models(serve: Callable[..., Any], protocol: str, kit: Any) -> None:
    """The committed examples (built by examples/build_onnx_models.py) serve as documented."""
    served = serve(
        EXAMPLES, model_control_mode=_explicit(), load_models=["onnx_add_sub", "onnx_string"]
    )
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, np.int32)
    got = served.infer(protocol, "onnx_add_sub", {"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(got["OUTPUT0"], a + b)
    np.testing.assert_array_equal(got["OUTPUT1"], a - b)
    text = np.array([[b"a", b"bc"]], dtype=np.object_)
    got = served.infer(protocol, "onnx_string", {"INPUT0": text})
    assert got["OUTPUT0"].tolist() == [[b"a", b"bc"]]


def _explicit() -> Any:
    from kernel import ModelControlMode

    return ModelControlMode.EXPLICIT
