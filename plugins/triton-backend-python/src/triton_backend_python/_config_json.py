"""A model config as the JSON Python models read (``args["model_config"]``) and complete.

Triton gives Python models the config as its config endpoint prints it: proto field names,
every field (defaults too), enums by name, 64-bit integers as JSON numbers. The kernel's
converter prints exactly that; this module only names the two directions for the backend.
"""

from __future__ import annotations

import json
from typing import Any

from kernel.config import ConfigParseError, ModelConfig, config_from_json, config_to_json

__all__ = ["config_from_model_json", "config_to_model_json"]


def config_to_model_json(config: ModelConfig) -> dict[str, Any]:
    """The config as the dict Triton parses ``args["model_config"]`` into."""
    return config_to_json(config)


def config_from_model_json(text: str, model_name: str) -> ModelConfig:
    """Parse the JSON an ``auto_complete_config`` produced.

    :raises ValueError: naming the model, when the JSON is not a valid model config.
    """
    try:
        return config_from_json(json.loads(text), source=f"auto-complete of '{model_name}'")
    except (ConfigParseError, ValueError) as exc:
        raise ValueError(f"auto_complete_config of model '{model_name}' gave {exc}") from exc
