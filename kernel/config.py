"""Triton's model configuration messages, for backends that auto-complete or read configs.

The classes are generated from ``protos/model_config.proto`` (Triton's field names and
numbers); this module is their public name, so plugins never import ``kernel._proto``.
"""

from kernel._proto.inference import DataType as DataType
from kernel._proto.inference import ModelConfig as ModelConfig
from kernel._proto.inference import ModelDynamicBatching as ModelDynamicBatching
from kernel._proto.inference import ModelInput as ModelInput
from kernel._proto.inference import ModelInstanceGroup as ModelInstanceGroup
from kernel._proto.inference import ModelInstanceGroupKind as ModelInstanceGroupKind
from kernel._proto.inference import ModelOutput as ModelOutput
from kernel._proto.inference import ModelParameter as ModelParameter
from kernel._proto.inference import ModelTensorReshape as ModelTensorReshape

__all__ = [
    "DataType",
    "ModelConfig",
    "ModelDynamicBatching",
    "ModelInput",
    "ModelInstanceGroup",
    "ModelInstanceGroupKind",
    "ModelOutput",
    "ModelParameter",
    "ModelTensorReshape",
]
