"""Triton's model configuration: its messages, and its text and JSON forms.

The classes are generated from ``protos/model_config.proto`` (Triton's field names and
numbers); this module is their public name, so plugins never import ``kernel._proto``. The
functions read and write ``config.pbtxt`` text and the JSON the model configuration API
returns, as Triton does (a backend that runs Triton's own Python models needs both).
"""

from kernel._config_text import ConfigParseError as ConfigParseError
from kernel._config_text import config_from_json as config_from_json
from kernel._config_text import config_to_json as config_to_json
from kernel._config_text import config_to_text as config_to_text
from kernel._config_text import parse_model_config as parse_model_config
from kernel._proto.inference import DataType as DataType
from kernel._proto.inference import ModelConfig as ModelConfig
from kernel._proto.inference import ModelDynamicBatching as ModelDynamicBatching
from kernel._proto.inference import ModelInput as ModelInput
from kernel._proto.inference import ModelInstanceGroup as ModelInstanceGroup
from kernel._proto.inference import ModelInstanceGroupKind as ModelInstanceGroupKind
from kernel._proto.inference import ModelOptimizationPolicy as ModelOptimizationPolicy
from kernel._proto.inference import (
    ModelOptimizationPolicyExecutionAccelerators as ModelOptimizationPolicyExecutionAccelerators,
)
from kernel._proto.inference import (
    ModelOptimizationPolicyExecutionAcceleratorsAccelerator as ModelOptimizationPolicyExecutionAcceleratorsAccelerator,  # noqa: E501
)
from kernel._proto.inference import ModelOptimizationPolicyGraph as ModelOptimizationPolicyGraph
from kernel._proto.inference import ModelOutput as ModelOutput
from kernel._proto.inference import ModelParameter as ModelParameter
from kernel._proto.inference import ModelSequenceBatching as ModelSequenceBatching
from kernel._proto.inference import ModelTensorReshape as ModelTensorReshape

__all__ = [
    "ConfigParseError",
    "DataType",
    "ModelConfig",
    "ModelDynamicBatching",
    "ModelInput",
    "ModelInstanceGroup",
    "ModelInstanceGroupKind",
    "ModelOptimizationPolicy",
    "ModelOptimizationPolicyExecutionAccelerators",
    "ModelOptimizationPolicyExecutionAcceleratorsAccelerator",
    "ModelOptimizationPolicyGraph",
    "ModelOutput",
    "ModelParameter",
    "ModelSequenceBatching",
    "ModelTensorReshape",
    "config_from_json",
    "config_to_json",
    "config_to_text",
    "parse_model_config",
]
