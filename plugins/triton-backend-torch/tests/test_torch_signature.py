"""Triton's naming rules, which file is loaded, and the load-time checks of a config against
the model (auto-complete for exported programs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from triton_backend_torch._naming import (
    OutputReader,
    input_positions,
    named_index,
    output_positions,
)
from triton_backend_torch._program import model_path

from kernel import KernelError, ModelConfig, ModelContext, Status
from kernel.config import DataType, ModelInput, ModelOutput

LOGGER = logging.getLogger("test.torch.naming")


def test_named_index_reads_the_digits_after_the_first_double_underscore() -> None:
    assert named_index("INPUT__0") == 0
    assert named_index("x__12") == 12
    assert named_index("INPUT0") is None
    assert named_index("a__b__1") is None  # Triton's rule: everything after the first "__"
    assert named_index("a__") is None


def test_inputs_named_after_forward_arguments_map_by_name() -> None:
    assert input_positions("m", ["b", "a"], ("a", "b"), LOGGER) == {"b": 1, "a": 0}


def test_inputs_named_with_an_index_map_by_index() -> None:
    assert input_positions("m", ["X__1", "Y__0"], ("a", "b"), LOGGER) == {"X__1": 1, "Y__0": 0}


def test_other_input_names_follow_the_config_order(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER.name):
        assert input_positions("m", ["foo", "bar"], ("a", "b"), LOGGER) == {"foo": 0, "bar": 1}
    assert "configuration's order is the argument order" in caplog.text


@pytest.mark.parametrize(
    ("names", "message"),
    [(["A__0", "B__0"], "both map to argument 0"), (["A__5"], "maps to argument 5")],
)
def test_inputs_claiming_impossible_arguments_fail(names: list[str], message: str) -> None:
    with pytest.raises(KernelError, match=message) as caught:
        input_positions("m", names, ("a",), LOGGER)
    assert caught.value.status is Status.INVALID_ARG


def test_outputs_by_index_by_config_order_and_by_dict_key() -> None:
    assert output_positions(["OUT__1", "OUT__0"]) == {"OUT__1": 1, "OUT__0": 0}
    assert output_positions(["y", "z"]) == {"y": 0, "z": 1}
    reader = OutputReader("m", {"y": 0, "z": 1})
    first, second = torch.zeros(1), torch.ones(1)
    assert reader.read((first, second), ["z"]) == {"z": second}
    assert reader.read([first, second], ["y"]) == {"y": first}
    assert reader.read(first, ["y"]) == {"y": first}
    assert reader.read({"z": second, "other": first}, ["z"]) == {"z": second}
    with pytest.raises(KernelError, match="refers to an output index which doesn't exist"):
        reader.read(first, ["z"])
    with pytest.raises(KernelError, match=r"without the output\(s\) \['y'\]"):
        reader.read({"z": second}, ["y"])


def _config(name: str, *inputs: tuple[str, DataType, list[int]], batch: int = 8) -> ModelConfig:
    return ModelConfig(
        name=name,
        backend="pytorch",
        max_batch_size=batch,
        input=[ModelInput(name=n, data_type=t, dims=d) for n, t, d in inputs],
        output=[ModelOutput(name="OUTPUT__0", data_type=DataType.TYPE_FP32, dims=[4])],
    )


def _load_error(kit: Any, folder: Path, program: Any, config: ModelConfig) -> KernelError:
    with pytest.raises(KernelError) as caught:
        kit.unit_instance(kit.unit_model(folder, program, config))
    return caught.value


def test_torchscript_input_count_must_match_forward(kit: Any, tmp_path: Path) -> None:
    config = _config("short", ("INPUT__0", DataType.TYPE_FP32, [4]))
    error = _load_error(kit, tmp_path / "m", kit.scripted(kit.AddSub()), config)
    assert error.status is Status.INVALID_ARG
    assert "configuration expects 1 inputs, model provides 2" in error.message


def test_torchscript_without_a_config_fails_clearly(kit: Any, tmp_path: Path) -> None:
    config = ModelConfig(name="bare", backend="pytorch")
    error = _load_error(kit, tmp_path / "m", kit.scripted(kit.AddSub()), config)
    assert "must contain at least one input" in error.message


@pytest.mark.parametrize(
    ("data_type", "dims", "message"),
    [
        (DataType.TYPE_INT32, [4], "TYPE_INT32 for input 'x', model provides TYPE_FP32"),
        (DataType.TYPE_FP32, [5], "model expects shape [-1,4] but the model configuration"
         " specifies shape [-1,5]"),
    ],
)  # fmt: skip
def test_exported_program_contradicting_the_config_fails_naming_both_sides(
    kit: Any, tmp_path: Path, data_type: DataType, dims: list[int], message: str
) -> None:
    program = kit.exported(kit.ScaleAndSum(), torch.zeros(2, 4), torch.zeros(2, 4))
    config = _config("m", ("x", data_type, dims), ("scale", DataType.TYPE_FP32, [4]))
    error = _load_error(kit, tmp_path / "m", program, config)
    assert error.status is Status.INVALID_ARG
    assert message in error.message


def test_exported_dict_program_is_auto_completed_by_key(kit: Any, tmp_path: Path) -> None:
    example = {"a": torch.zeros(2, 3), "b": torch.zeros(2, 3)}
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        kit.DictModel(), (example,), dynamic_shapes=({"a": {0: batch}, "b": {0: batch}},)
    )
    model = kit.unit_model(tmp_path / "m", program, ModelConfig(name="m", backend="pytorch"))
    config = model.context.config
    assert [(i.name, list(i.dims)) for i in config.input] == [("a", [3]), ("b", [3])]
    assert [o.name for o in config.output] == ["sum", "product"]
    assert config.max_batch_size == 4 and config.dynamic_batching is not None
    kit.unit_instance(model)  # and the completed config passes the checks


def test_default_model_filename_chooses_the_file_and_its_format(
    kit: Any, repo: Path, serve: Any, protocol: str
) -> None:
    program = kit.exported(kit.AddSub(), torch.zeros(2, 4), torch.zeros(2, 4))
    config = kit.ADD_SUB_CONFIG + 'default_model_filename: "simple.pt2"'
    kit.write_torch(repo, "renamed", program, config, file="simple.pt2")
    served = serve(repo)
    one = torch.ones(1, 4).numpy()
    got = served.infer(protocol, "renamed", {"INPUT__0": one, "INPUT__1": one})
    assert got["OUTPUT__0"].tolist() == [[2.0] * 4]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    context = ModelContext(
        name="m",
        version=1,
        path=tmp_path / "m" / "1",
        model_dir=tmp_path / "m",
        config=_config("m"),
        backend_config={},
        logger=LOGGER,
        server=None,  # type: ignore[arg-type]
    )
    with pytest.raises(KernelError) as caught:
        model_path(context)
    assert caught.value.status is Status.UNAVAILABLE
    assert "model.pt'" in caught.value.message and "'model.pt2'" in caught.value.message
