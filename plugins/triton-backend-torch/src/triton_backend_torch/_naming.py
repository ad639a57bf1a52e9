"""Triton's PyTorch naming rules: which config tensor is which forward argument or output.

Inputs, in Triton's order of preference:

1. every input name is a forward argument name: each goes to its argument (FORWARD_ARGUMENT);
2. every name is ``<name>__<index>``: the index is the argument position (NAMED_INDEX);
3. otherwise the config's order is the argument order (STRICT_CONFIG_ORDERING, with a warning).

A forward taking a single ``Dict[str, Tensor]`` gets every input in it, keyed by input name.

Outputs: a dict result is read by output name. A tuple or list result is read by position:
``<name>__<index>`` when every output name has that form, otherwise the config's order. A
single tensor is position 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kernel import KernelError, Status


def named_index(name: str) -> int | None:
    """The index of ``<name>__<index>`` (Triton reads the digits after the first ``__``)."""
    _, found, tail = name.partition("__")
    return int(tail) if found and tail.isascii() and tail.isdigit() else None


def input_positions(
    model: str, names: Sequence[str], forward_args: Sequence[str], logger: logging.Logger
) -> dict[str, int]:
    """The forward argument position of each input name, by Triton's three conventions.

    :raises KernelError: ``INVALID_ARG`` when two inputs claim one argument, or a position
        lies past the forward's arguments.
    """
    if all(name in forward_args for name in names):
        positions = {name: forward_args.index(name) for name in names}
    elif all(named_index(name) is not None for name in names):
        positions = {name: named_index(name) or 0 for name in names}
    else:
        logger.warning(
            "inputs of model '%s' are neither all arguments of its forward %s nor all of the"
            " form <name>__<index>; the configuration's order is the argument order",
            model,
            list(forward_args),
        )
        positions = {name: i for i, name in enumerate(names)}
    claimed: dict[int, str] = {}
    for name, position in positions.items():
        if position >= len(forward_args):
            raise KernelError(
                Status.INVALID_ARG,
                f"unable to load model '{model}': input '{name}' maps to argument {position},"
                f" but forward takes {len(forward_args)} ({list(forward_args)})",
            )
        if position in claimed:
            raise KernelError(
                Status.INVALID_ARG,
                f"unable to load model '{model}': inputs '{claimed[position]}' and '{name}' both"
                f" map to argument {position} ('{forward_args[position]}') of forward",
            )
        claimed[position] = name
    return positions


def output_positions(names: Sequence[str]) -> dict[str, int]:
    """The position of each output in a tuple or list result."""
    if all(named_index(name) is not None for name in names):
        return {name: named_index(name) or 0 for name in names}
    return {name: i for i, name in enumerate(names)}


@dataclass(frozen=True, slots=True)
class OutputReader:
    """Picks the config's outputs out of whatever a forward returned."""

    model: str
    positions: dict[str, int]

    def read(self, result: Any, names: Sequence[str]) -> dict[str, Any]:
        """The named outputs of ``result`` (a tensor, a tuple or list, or a dict).

        :raises KernelError: ``INVALID_ARG`` naming an output the result does not hold.
        """
        if isinstance(result, dict):
            missing = [n for n in names if n not in result]
            if missing:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"model '{self.model}' returned a dict without the output(s) {missing}"
                    f" (its keys: {sorted(map(str, result))})",
                )
            return {name: result[name] for name in names}
        if isinstance(result, torch.Tensor) or (
            isinstance(result, list) and all(isinstance(item, str) for item in result)
        ):
            result = (result,)  # one tensor, or one List[str] output
        if not isinstance(result, tuple | list):
            raise KernelError(
                Status.INTERNAL,
                f"model '{self.model}' returned a {type(result).__name__}; expected a tensor, a"
                " tuple or list of outputs, or a dict of outputs",
            )
        chosen: dict[str, Any] = {}
        for name in names:
            position = self.positions[name]
            if position >= len(result):
                raise KernelError(
                    Status.INVALID_ARG,
                    f"the output {name} in the model configuration refers to an output index"
                    f" which doesn't exist. This model has {len(result)} outputs",
                )
            chosen[name] = result[position]
        return chosen
