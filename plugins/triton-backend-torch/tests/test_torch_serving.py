"""PyTorch models served end to end through tritonclient (gRPC and HTTP), compared with calling
the module directly. One server, started once for the module, serves every model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernel import ModelControlMode
from kernel.testing.clients import serving

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "model_repository"

DICT_CONFIG = """
backend: "pytorch"
max_batch_size: 8
input [
  { name: "a" data_type: TYPE_INT64 dims: [ 3 ] },
  { name: "b" data_type: TYPE_INT64 dims: [ 3 ] }
]
output [
  { name: "product" data_type: TYPE_INT64 dims: [ 3 ] },
  { name: "sum" data_type: TYPE_INT64 dims: [ 3 ] }
]
"""

UPPER_CONFIG = """
backend: "pytorch"
input [ { name: "text" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_STRING dims: [ -1 ] } ]
"""


@pytest.fixture(scope="module")
def served(kit: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One server for the module: a scripted, a traced, an exported and a dict model."""
    repo = tmp_path_factory.mktemp("torch_models")
    example = np.zeros((2, 4), np.float32)
    kit.write_torch(repo, "add_sub", kit.scripted(kit.AddSub()), kit.ADD_SUB_CONFIG)
    classifier = kit.traced(kit.Classifier(), *map(kit.torch_tensor, [example]))
    kit.write_torch(repo, "classifier", classifier, kit.CLASSIFIER_CONFIG)
    program = kit.exported(kit.ScaleAndSum(), *map(kit.torch_tensor, [example, example]))
    kit.write_torch(repo, "scale_and_sum", program, None)  # no config: auto-complete
    kit.write_torch(repo, "dict_model", kit.scripted(kit.DictModel()), DICT_CONFIG)
    kit.write_torch(repo, "upper", kit.scripted(kit.Upper()), UPPER_CONFIG)
    with serving() as serve:
        yield serve(repo)


def test_scripted_tuple_outputs_by_named_index(kit: Any, served: Any, protocol: str) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4)).astype(np.float32)
    got = served.infer(protocol, "add_sub", {"INPUT__0": a, "INPUT__1": b})
    want = kit.reference(kit.AddSub(), a, b)
    assert set(got) == {"OUTPUT__0", "OUTPUT__1"}
    np.testing.assert_array_equal(got["OUTPUT__0"], want[0].numpy())
    np.testing.assert_array_equal(got["OUTPUT__1"], want[1].numpy())


def test_only_requested_outputs_are_returned(served: Any, protocol: str) -> None:
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    got = served.infer(protocol, "add_sub", {"INPUT__0": a, "INPUT__1": a}, ["OUTPUT__1"])
    assert list(got) == ["OUTPUT__1"]
    np.testing.assert_array_equal(got["OUTPUT__1"], np.zeros((1, 4), np.float32))


def test_traced_module_by_forward_argument_name(kit: Any, served: Any, protocol: str) -> None:
    """Traced with grad enabled, its weights requiring grad: it serves without autograd."""
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    got = served.infer(protocol, "classifier", {"x": x})["probabilities"]
    np.testing.assert_allclose(got, kit.reference(kit.Classifier(), x).numpy(), rtol=1e-6)
    assert got.shape == (5, 3)


def test_exported_program_auto_completed_with_dynamic_batch(
    kit: Any, served: Any, protocol: str
) -> None:
    config = served.config(protocol, "scale_and_sum")
    assert config["backend"] == "pytorch"
    assert int(config["max_batch_size"]) == 4
    assert [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in config["input"]] == [
        ("x", "TYPE_FP32", [4]),
        ("scale", "TYPE_FP32", [4]),
    ]
    assert [o["name"] for o in config["output"]] == ["OUTPUT__0", "OUTPUT__1"]
    rng = np.random.default_rng(2)
    for rows in (1, 4):
        x, scale = rng.standard_normal((2, rows, 4)).astype(np.float32)
        got = served.infer(protocol, "scale_and_sum", {"x": x, "scale": scale})
        want = kit.reference(kit.ScaleAndSum(), x, scale)
        np.testing.assert_allclose(got["OUTPUT__0"], want[0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(got["OUTPUT__1"], want[1].numpy(), rtol=1e-6)
        assert got["OUTPUT__1"].shape == (rows, 1)


def test_dict_in_dict_out(kit: Any, served: Any, protocol: str) -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
    b = np.array([[10, 20, 30], [40, 50, 60]], np.int64)
    got = served.infer(protocol, "dict_model", {"a": a, "b": b})
    want = kit.DictModel()({"a": kit.torch_tensor(a), "b": kit.torch_tensor(b)})
    np.testing.assert_array_equal(got["sum"], want["sum"].numpy())
    np.testing.assert_array_equal(got["product"], want["product"].numpy())


def test_strings_cross_as_lists(kit: Any, served: Any, protocol: str) -> None:
    words = ["héllo", "world", ""]
    text = np.array([w.encode() for w in words], dtype=np.object_)
    got = served.infer(protocol, "upper", {"text": text})["OUTPUT__0"]
    assert got.tolist() == [w.encode() for w in kit.scripted(kit.Upper())(words)]


def test_example_repository_models(kit: Any, serve: Any, protocol: str) -> None:
    """The committed examples (built by examples/build_torch_models.py) serve as documented."""
    served = serve(
        EXAMPLES,
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=["torch_add_sub", "torch_classifier"],
    )
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.full((2, 16), 3, np.float32)
    got = served.infer(protocol, "torch_add_sub", {"INPUT__0": a, "INPUT__1": b})
    np.testing.assert_array_equal(got["OUTPUT__0"], a + b)
    np.testing.assert_array_equal(got["OUTPUT__1"], a - b)
    x = np.ones((3, 4), np.float32)
    got = served.infer(protocol, "torch_classifier", {"x": x})
    probabilities = got["OUTPUT__0"]
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), np.ones(3), rtol=1e-5)
