"""config.pbtxt parsing, and the JSON and text forms of ModelConfig."""

from __future__ import annotations

import json
import pickle
from typing import Any

import betterproto2
import pytest

from kernel._config_text import (
    ConfigParseError,
    config_from_json,
    config_to_json,
    config_to_text,
    parse_model_config,
)
from kernel._proto.inference import (
    DataType,
    ModelConfig,
    ModelInputFormat,
    ModelInstanceGroupKind,
    ModelQueuePolicyTimeoutAction,
    ModelSequenceBatchingControlKind,
)

SOURCE = "models/add/config.pbtxt"

# A config touching most of what real repositories use, in the looser spellings
# config.pbtxt files use (with and without ':' before messages, lists and
# repeated entries, comments, several parameters blocks).
REALISTIC = """
# An ONNX model with two versions pinned.
name: "add"
backend: "onnxruntime"
max_batch_size: 8
version_policy: { specific: { versions: [ 1, 3 ] } }
input [
  {
    name: "INPUT0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  },
  {
    name: "MASK"
    data_type: TYPE_BOOL
    dims: [ -1 ]
    optional: true
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    label_filename: "labels.txt"
    reshape: { shape: [ 1, 1000 ] }
  }
]
instance_group [
  { count: 2, kind: KIND_CPU },
  { count: 1 kind: KIND_GPU gpus: [ 0, 1 ] }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  preserve_ordering: true
  priority_levels: 2
  default_priority_level: 1
  priority_queue_policy {
    key: 1
    value: { timeout_action: DELAY, default_timeout_microseconds: 5000 }
  }
}
parameters: { key: "intra_op_thread_count" value: { string_value: "2" } }
parameters [
  { key: "EXECUTION_ENV_PATH", value: { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }
]
optimization {
  execution_accelerators {
    gpu_execution_accelerator: [
      { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } }
    ]
  }
}
model_transaction_policy { decoupled: false }
"""

SEQUENCE = """
name: "accumulate"
backend: "python"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  oldest { max_candidate_sequences: 4 preferred_batch_size: [ 2, 4 ] }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
  state [
    {
      input_name: "STATE_IN"
      output_name: "STATE_OUT"
      data_type: TYPE_INT32
      dims: [ 1 ]
      initial_state: { name: "zeros" data_type: TYPE_INT32 dims: [ 1 ] zero_data: true }
    }
  ]
}
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

ENSEMBLE = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 1
input [ { name: "RAW" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "SCORES" data_type: TYPE_FP32 dims: [ 10 ] } ]
ensemble_scheduling {
  step [
    {
      model_name: "preprocess"
      model_version: -1
      input_map { key: "IN" value: "RAW" }
      output_map { key: "OUT" value: "pixels" }
    },
    {
      model_name: "classifier"
      model_version: 2
      input_map { key: "INPUT0" value: "pixels" }
      output_map { key: "OUTPUT0" value: "SCORES" }
    }
  ]
}
version_policy: { latest: { num_versions: 2 } }
"""


def test_parse_realistic_config() -> None:
    config = parse_model_config(REALISTIC, SOURCE)
    assert isinstance(config, ModelConfig)
    assert (config.name, config.backend, config.max_batch_size) == (
        "add",
        "onnxruntime",
        8,
    )
    assert config.platform == ""

    assert config.version_policy is not None
    assert betterproto2.which_one_of(config.version_policy, "policy_choice")[0] == "specific"
    assert config.version_policy.specific is not None
    assert config.version_policy.specific.versions == [1, 3]

    first, mask = config.input
    assert (first.name, first.data_type, first.dims) == (
        "INPUT0",
        DataType.TYPE_FP32,
        [3, 224, 224],
    )
    assert first.format is ModelInputFormat.NCHW
    assert (mask.data_type, mask.dims, mask.optional) == (
        DataType.TYPE_BOOL,
        [-1],
        True,
    )
    assert first.optional is False

    (out,) = config.output
    assert out.reshape is not None and out.reshape.shape == [1, 1000]
    assert out.label_filename == "labels.txt"

    cpu, gpu = config.instance_group
    assert (cpu.kind, cpu.count, cpu.gpus) == (ModelInstanceGroupKind.CPU, 2, [])
    assert (gpu.kind, gpu.count, gpu.gpus) == (ModelInstanceGroupKind.GPU, 1, [0, 1])

    assert betterproto2.which_one_of(config, "scheduling_choice")[0] == "dynamic_batching"
    batching = config.dynamic_batching
    assert batching is not None
    assert batching.preferred_batch_size == [4, 8]
    assert batching.max_queue_delay_microseconds == 100
    assert batching.preserve_ordering is True
    assert (batching.priority_levels, batching.default_priority_level) == (2, 1)
    policy = batching.priority_queue_policy[1]
    assert policy.timeout_action is ModelQueuePolicyTimeoutAction.DELAY
    assert policy.default_timeout_microseconds == 5000
    assert batching.default_queue_policy is None
    assert config.sequence_batching is None and config.ensemble_scheduling is None

    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "intra_op_thread_count": "2",
        "EXECUTION_ENV_PATH": "$$TRITON_MODEL_DIRECTORY/env.tar.gz",
    }
    assert config.optimization is not None
    accelerators = config.optimization.execution_accelerators
    assert accelerators is not None
    (trt,) = accelerators.gpu_execution_accelerator
    assert (trt.name, trt.parameters) == ("tensorrt", {"precision_mode": "FP16"})
    # Present-but-default sub-messages stay present.
    assert config.model_transaction_policy is not None
    assert config.model_transaction_policy.decoupled is False
    assert config.response_cache is None


def test_parse_sequence_batching() -> None:
    config = parse_model_config(SEQUENCE, SOURCE)
    sequence = config.sequence_batching
    assert sequence is not None and config.dynamic_batching is None
    assert sequence.max_sequence_idle_microseconds == 5_000_000
    assert betterproto2.which_one_of(sequence, "strategy_choice")[0] == "oldest"
    assert sequence.oldest is not None and sequence.direct is None
    assert sequence.oldest.preferred_batch_size == [2, 4]
    start, corrid = sequence.control_input
    assert start.control[0].kind is ModelSequenceBatchingControlKind.CONTROL_SEQUENCE_START
    assert start.control[0].fp32_false_true == [0.0, 1.0]
    assert corrid.control[0].data_type is DataType.TYPE_UINT64
    (state,) = sequence.state
    assert (state.input_name, state.output_name, state.dims) == (
        "STATE_IN",
        "STATE_OUT",
        [1],
    )
    (initial,) = state.initial_state
    assert betterproto2.which_one_of(initial, "state_data") == ("zero_data", True)


def test_parse_ensemble_and_version_policy() -> None:
    config = parse_model_config(ENSEMBLE, SOURCE)
    assert config.platform == "ensemble"
    ensemble = config.ensemble_scheduling
    assert ensemble is not None
    first, second = ensemble.step
    assert (first.model_name, first.model_version) == ("preprocess", -1)
    assert first.input_map == {"IN": "RAW"} and first.output_map == {"OUT": "pixels"}
    assert (second.model_name, second.model_version) == ("classifier", 2)
    assert config.version_policy is not None and config.version_policy.latest is not None
    assert config.version_policy.latest.num_versions == 2
    assert config.input[0].data_type is DataType.TYPE_STRING


def test_empty_and_minimal_configs() -> None:
    assert parse_model_config("", SOURCE) == ModelConfig()
    config = parse_model_config("dynamic_batching {}\nversion_policy { all {} }\n", SOURCE)
    # Empty messages are present, not absent: "dynamic_batching {}" turns batching on.
    assert config.dynamic_batching is not None
    assert config.version_policy is not None and config.version_policy.all is not None
    assert parse_model_config(config_to_text(config), SOURCE) == config
    assert config_to_json(config)["dynamic_batching"] == {
        "preferred_batch_size": [],
        "max_queue_delay_microseconds": 0,
        "preserve_ordering": False,
        "priority_levels": 0,
        "default_priority_level": 0,
        "priority_queue_policy": {},
    }


def _error(text: str) -> ConfigParseError:
    with pytest.raises(ConfigParseError) as info:
        parse_model_config(text, SOURCE)
    return info.value


def test_error_bad_integer_names_file_line_column_and_field() -> None:
    error = _error('name: "add"\nmax_batch_size: x\n')
    assert (error.source, error.line, error.column) == (SOURCE, 2, 17)
    assert error.field == "max_batch_size"
    assert str(error) == f"{SOURCE}:2:17: Couldn't parse integer: x (field 'max_batch_size')"
    assert isinstance(error, ValueError)


def test_error_unknown_field() -> None:
    error = _error('name: "add"\n  max_batch: 4\n')
    assert (error.line, error.column, error.field) == (2, 3, "max_batch")
    assert str(error).startswith(f"{SOURCE}:2:3: ")
    assert 'no field named "max_batch"' in str(error)


def test_error_unknown_enum_value_names_the_field() -> None:
    error = _error('input [ { name: "x" data_type: TYPE_FLOAT32 dims: [ 1 ] } ]')
    assert (error.line, error.field) == (1, "data_type")
    assert "TYPE_FLOAT32" in error.message


def test_error_in_a_list_value_names_the_field() -> None:
    error = _error('input [\n  { name: "a:b" dims: [ 1, y ] }\n]')
    assert (error.line, error.field) == (2, "dims")


def test_error_two_scheduling_choices() -> None:
    error = _error("dynamic_batching {}\nsequence_batching {}\n")
    assert (error.line, error.field) == (2, "sequence_batching")


def test_error_syntax_without_field() -> None:
    error = _error('name: "add"\ninput { name "x" }\n')
    assert error.line == 2 and error.column is not None
    assert error.message == 'Expected ":".'


def test_error_pickles() -> None:
    error = _error("max_batch_size: x")
    again = pickle.loads(pickle.dumps(error))
    assert (again.source, again.line, again.column, again.field) == (
        SOURCE,
        1,
        17,
        "max_batch_size",
    )
    assert str(again) == str(error)


def test_json_uses_proto_field_names_and_triton_conventions() -> None:
    config = parse_model_config(REALISTIC, SOURCE)
    data: Any = config_to_json(config)
    json.dumps(data)  # JSON-able as is
    assert data["name"] == "add"
    assert data["max_batch_size"] == 8
    assert data["platform"] == ""  # defaults are printed
    assert data["batch_input"] == [] and data["cc_model_filenames"] == {}
    assert "maxBatchSize" not in data
    first = data["input"][0]
    assert first["data_type"] == "TYPE_FP32" and first["format"] == "FORMAT_NCHW"
    assert first["dims"] == [3, 224, 224]  # int64 as numbers, as Triton prints them
    assert data["instance_group"][0]["kind"] == "KIND_CPU"
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert data["dynamic_batching"]["priority_queue_policy"]["1"]["timeout_action"] == "DELAY"
    assert data["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert data["parameters"]["intra_op_thread_count"] == {"string_value": "2"}
    assert "sequence_batching" not in data  # unset sub-messages are left out
    assert "response_cache" not in data


@pytest.mark.parametrize("text", [REALISTIC, SEQUENCE, ENSEMBLE])
def test_json_and_text_round_trips(text: str) -> None:
    config = parse_model_config(text, SOURCE)
    data = config_to_json(config)
    assert config_from_json(data) == config
    assert config_from_json(json.dumps(data)) == config
    assert config_from_json(json.dumps(data).encode()) == config
    assert parse_model_config(config_to_text(config), SOURCE) == config


def test_config_from_json_accepts_camel_case_too() -> None:
    config = config_from_json(
        '{"name": "m", "maxBatchSize": 4, "input": [{"dataType": "TYPE_INT8"}]}'
    )
    assert config.max_batch_size == 4 and config.input[0].data_type is DataType.TYPE_INT8


def test_config_from_json_unknown_field() -> None:
    with pytest.raises(ConfigParseError) as info:
        config_from_json({"name": "m", "input": [{"name": "x", "shape": [1]}]})
    error = info.value
    assert error.field == "shape"
    assert (error.line, error.column) == (None, None)
    assert 'no field named "shape"' in str(error)
    assert str(error).startswith("config: ")


def test_config_from_json_bad_value_and_bad_json() -> None:
    with pytest.raises(ConfigParseError) as info:
        config_from_json('{"input": [{"dims": ["a"]}]}', source="load request")
    assert info.value.field == "dims" and str(info.value).startswith("load request: ")
    with pytest.raises(ConfigParseError) as info:
        config_from_json('{\n  "name": }')
    assert (info.value.line, info.value.column) == (2, 11)
