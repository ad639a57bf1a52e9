"""Model configuration as the Python backend hands it to models: dicts parsed from JSON.

``ModelConfig`` is what ``auto_complete_config`` receives and returns. It may add inputs and
outputs, set ``max_batch_size``, the dynamic batcher and the transaction policy, and refuses
what contradicts the configuration the user wrote, with Triton's rules.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ModelConfig",
    "get_input_config_by_name",
    "get_output_config_by_name",
    "using_decoupled_model_transaction_policy",
]


def _by_name(model_config: dict[str, Any], key: str, name: str) -> dict[str, Any] | None:
    for properties in model_config.get(key) or ():
        if properties.get("name") == name:
            found: dict[str, Any] = properties
            return found
    return None


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The config of input ``name`` (a dict), or None when the model has no such input."""
    return _by_name(model_config, "input", name)


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The config of output ``name`` (a dict), or None when the model has no such output."""
    return _by_name(model_config, "output", name)


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    """Whether the config sets ``model_transaction_policy { decoupled: true }``."""
    policy = model_config.get("model_transaction_policy") or {}
    return bool(policy.get("decoupled", False))


class ModelConfig:
    """The configuration ``auto_complete_config`` completes.

    Only ``max_batch_size``, inputs, outputs, the dynamic batcher and the transaction policy
    may be changed; ``as_dict`` gives read access to the whole configuration.
    """

    def __init__(self, model_config: str | dict[str, Any]) -> None:
        config = json.loads(model_config) if isinstance(model_config, str) else model_config
        config.setdefault("input", [])
        config.setdefault("output", [])
        config.setdefault("max_batch_size", 0)
        self._model_config: dict[str, Any] = config

    @property
    def _name(self) -> str:
        return str(self._model_config.get("name", ""))

    def as_dict(self) -> dict[str, Any]:
        """The configuration as a dict (proto field names, as in ``config.pbtxt``)."""
        return self._model_config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        """Set ``max_batch_size``.

        :raises ValueError: when the configuration already sets a larger value.
        """
        current = int(self._model_config.get("max_batch_size", 0))
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config"
                f" function for model '{self._name}' specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = int(max_batch_size)

    def set_dynamic_batching(self) -> None:
        """Use the dynamic batcher (with default settings) unless one is configured.

        :raises ValueError: when the configuration uses the sequence or ensemble scheduler.
        """
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but"
                    f" auto-complete-config function for model '{self._name}' tries to set"
                    " scheduling_choice as 'dynamic_batching'"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def _add_tensor(self, kind: str, tensor: dict[str, Any], allowed: tuple[str, ...]) -> None:
        model = self._name
        if not isinstance(tensor, dict):
            raise ValueError(
                f"{kind} in auto-complete-config function for model '{model}' must be a dict"
            )
        label = f"{kind} '{tensor.get('name', '')}'"
        extra = [key for key in tensor if key not in allowed]
        if extra:
            quoted = ", ".join(f"'{a}'" for a in allowed)
            raise ValueError(
                f"{label} in auto-complete-config function for model '{model}' contains"
                f" property other than {quoted}."
            )
        for required in ("name", "data_type", "dims"):
            if required not in tensor:
                where = f"{kind}" if required == "name" else label
                raise ValueError(
                    f"{where} in auto-complete-config function for model '{model}' is missing"
                    f" '{required}' property."
                )
        for current in self._model_config[kind]:
            if current.get("name") != tensor["name"]:
                continue
            current_type = current.get("data_type", "TYPE_INVALID")
            if current_type not in ("TYPE_INVALID", tensor["data_type"]):
                raise ValueError(
                    f"unable to load model '{model}', configuration expects datatype"
                    f" {current_type} for {kind} '{tensor['name']}', model provides"
                    f" {tensor['data_type']}"
                )
            current_dims = [int(d) for d in current.get("dims") or ()]
            wanted_dims = [int(d) for d in tensor["dims"]]
            if current_dims and current_dims != wanted_dims:
                raise ValueError(
                    f"model '{model}', tensor '{tensor['name']}': the model expects dims"
                    f" {wanted_dims} but the model configuration specifies dims {current_dims}"
                )
            if (
                "optional" in tensor
                and "optional" in current
                and bool(current["optional"]) != bool(tensor["optional"])
                and current.get("data_type", "TYPE_INVALID") != "TYPE_INVALID"
            ):
                raise ValueError(
                    f"model '{model}', tensor '{tensor['name']}': the model expects optional"
                    f" {tensor['optional']} but the model configuration specifies optional"
                    f" {current['optional']}"
                )
            current["data_type"] = tensor["data_type"]
            current["dims"] = wanted_dims
            if "optional" in tensor:
                current["optional"] = bool(tensor["optional"])
            return
        self._model_config[kind].append(dict(tensor))

    def add_input(self, input: dict[str, Any]) -> None:  # noqa: A002 - Triton's name
        """Add an input (``name``, ``data_type``, ``dims``, optionally ``optional``).

        :raises ValueError: for other properties, a missing one, or an input of that name
            that the configuration declares with another datatype, dims or optional flag.
        """
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict[str, Any]) -> None:
        """Add an output (``name``, ``data_type``, ``dims``).

        :raises ValueError: for other properties, a missing one, or an output of that name
            that the configuration declares with another datatype or dims.
        """
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def set_model_transaction_policy(self, transaction_policy_dict: dict[str, Any]) -> None:
        """Set ``model_transaction_policy`` (only its ``decoupled`` property).

        :raises ValueError: for another property, or a ``decoupled`` value contradicting the
            configuration's.
        """
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError(
                    "model transaction property in auto-complete-config function for model"
                    f" '{self._name}' contains property other than 'decoupled'."
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            wanted = bool(transaction_policy_dict["decoupled"])
            if "decoupled" in policy and bool(policy["decoupled"]) != wanted:
                raise ValueError(
                    "trying to change decoupled property in auto-complete-config for model"
                    f" '{self._name}', which is already set to '{policy['decoupled']}'."
                )
            policy["decoupled"] = wanted
