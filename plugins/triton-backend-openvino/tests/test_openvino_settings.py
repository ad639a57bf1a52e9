"""Triton's OpenVINO parameters: read, applied to the compiled model, wrong ones refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from triton_backend_openvino._settings import read_settings

from kernel import KernelError, Status


def _parameters(kit: Any, **values: str) -> Any:
    entries = "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in values.items()
    )
    return kit.parse_config('backend: "openvino"\n' + entries)


def test_parameters_become_compile_properties_and_flags(kit: Any) -> None:
    settings = read_settings(
        _parameters(
            kit,
            NUM_STREAMS="auto",
            PERFORMANCE_HINT="throughput",
            INFERENCE_NUM_THREADS="02",
            HINT_BF16="YES",
            ENABLE_BATCH_PADDING="yes",
            RESHAPE_IO_LAYERS="Yes",
        )
    )
    assert settings.properties == {
        "NUM_STREAMS": "AUTO",
        "PERFORMANCE_HINT": "THROUGHPUT",
        "INFERENCE_NUM_THREADS": "2",
        "INFERENCE_PRECISION_HINT": "bf16",
    }
    assert settings.batch_padding and settings.reshape_io_layers
    assert not settings.skip_dynamic_batch_size
    assert read_settings(kit.parse_config('backend: "openvino"')).properties == {}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("NUM_STREAMS", "-1", "AUTO or NUMA or a number >= 0"),
        ("NUM_STREAMS", "many", "AUTO or NUMA or a number >= 0"),
        ("PERFORMANCE_HINT", "FAST", "LATENCY, THROUGHPUT, CUMULATIVE_THROUGHPUT"),
        ("INFERENCE_NUM_THREADS", "1.5", "a number >= 0"),
        ("ENABLE_BATCH_PADDING", "maybe", "YES or NO"),
        ("RESHAPE_IO_LAYERS", "si", "YES or NO"),
    ],
)
def test_invalid_value_is_refused_by_name(kit: Any, key: str, value: str, expected: str) -> None:
    with pytest.raises(KernelError) as failure:
        read_settings(_parameters(kit, **{key: value}))
    assert failure.value.status == Status.INVALID_ARG
    message = str(failure.value)
    assert f"parameter '{key}'" in message and f"'{value}'" in message and expected in message


def test_unknown_key_is_ignored_with_a_warning_naming_the_known_ones(
    kit: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        settings = read_settings(_parameters(kit, NUM_STREAMS="1", CPU_THREADS_NUM="4"))
    assert settings.properties == {"NUM_STREAMS": "1"}  # as Triton's openvino backend
    assert "unknown parameter 'CPU_THREADS_NUM' for the openvino backend is ignored" in caplog.text
    assert "INFERENCE_NUM_THREADS" in caplog.text


def test_properties_reach_the_compiled_model(kit: Any, tmp_path: Path) -> None:
    kit.to_ir(kit.mlp_model(), tmp_path / "1" / "model.xml", batch_layout=True)
    config = _parameters(
        kit, NUM_STREAMS="2", PERFORMANCE_HINT="THROUGHPUT", INFERENCE_NUM_THREADS="2"
    )
    instance = kit.unit_instance(tmp_path, config)
    try:
        assert int(instance.compiled.get_property("NUM_STREAMS")) == 2
        assert str(instance.compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
        assert int(instance.compiled.get_property("INFERENCE_NUM_THREADS")) == 2
        assert len(instance.queue) == 2  # one infer request per stream
    finally:
        instance.finalize()


_FIXED_SHAPE_CONFIG = """
backend: "openvino"
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1, 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ -1, 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1, 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ -1, 16 ] }
]
"""


def test_reshape_io_layers_gives_the_model_the_config_dims(kit: Any, tmp_path: Path) -> None:
    """A model fixed at [2,16] refuses dims [-1,16], unless RESHAPE_IO_LAYERS reshapes it."""
    kit.to_ir(kit.add_sub_model(batch=2), tmp_path / "1" / "model.xml")
    with pytest.raises(KernelError) as failure:
        kit.unit_instance(tmp_path, kit.parse_config(_FIXED_SHAPE_CONFIG))
    message = str(failure.value)
    assert "'INPUT0'" in message and "[2,16]" in message and "[-1,16]" in message

    reshaped = kit.parse_config(
        _FIXED_SHAPE_CONFIG
        + 'parameters { key: "RESHAPE_IO_LAYERS" value { string_value: "YES" } }'
    )
    instance = kit.unit_instance(tmp_path, reshaped)
    try:
        assert str(instance.compiled.inputs[0].get_partial_shape()) == "[?,16]"
        five = np.arange(80, dtype=np.int32).reshape(5, 16)
        got = kit.run_instance(instance, {"INPUT0": five, "INPUT1": five})
        np.testing.assert_array_equal(got["OUTPUT0"], 2 * five)
    finally:
        instance.finalize()
