"""A request's ``parameters``, read once for both frontends.

Triton reserves a few parameter keys for itself -- the sequence batcher's ``sequence_id``,
``sequence_start`` and ``sequence_end``, the scheduler's ``priority`` and ``timeout`` -- and every
other ``triton_`` key; the rest go to the model. The rules (which keys, which kinds of value,
what range) are here, once. Each frontend turns its wire form into ``(key, kind, value)`` items
(JSON values over HTTP, ``InferParameter`` oneofs over gRPC) and brings its protocol's wording
for a refusal (:class:`ParamWording`), since Triton words them per protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from kernel._errors import KernelError
from kernel._inference import ParameterValue, RequestFlags

__all__ = ["EMPTY_FINAL", "Kind", "ParamWording", "RequestControls", "json_kind"]

Kind = Literal["bool", "int", "uint", "double", "string", "other"]
"""A parameter value's kind: ``int`` is a signed 64-bit integer, ``uint`` an unsigned one
(gRPC's ``uint64_param``, or a JSON integer above the signed range); ``other`` is anything a
parameter cannot be (a JSON list, object or null; an unset oneof)."""

EMPTY_FINAL = "triton_enable_empty_final_response"
"""The one ``triton_`` key a client may set: a decoupled model's bare final flag is sent as an
empty response."""

_RESERVED_PREFIX = "triton_"
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_INTEGERS: tuple[Kind, ...] = ("int", "uint")
_CUSTOM: frozenset[Kind] = frozenset(("bool", "int", "double", "string"))


@dataclass(frozen=True, slots=True)
class ParamWording:
    """How one protocol words a refused parameter (every refusal is ``INVALID_ARG``)."""

    wrong_kind: Callable[[str, tuple[Kind, ...]], KernelError]
    """A reserved key with a value of another kind than ``expected``."""
    bad_custom: Callable[[str], KernelError]
    """A model parameter of a kind parameters cannot have."""
    reserved: Callable[[], KernelError]
    """A ``triton_`` key clients may not set."""


def json_kind(value: object) -> Kind:
    """The kind of a JSON value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return "int"
        return "uint" if 0 <= value < 2**64 else "other"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return "other"


@dataclass(slots=True)
class RequestControls:
    """What a request's parameters say: Triton's reserved keys, and the rest for the model."""

    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    correlation_id: int | str = 0
    flags: RequestFlags = RequestFlags.NONE
    priority: int = 0
    timeout_us: int = 0
    empty_final: bool = False
    switches: dict[str, bool] = field(default_factory=dict)
    """The protocol's own boolean keys that were set (e.g. HTTP's ``binary_data_output``)."""

    def read(
        self,
        items: Iterable[tuple[str, Kind, Any]],
        wording: ParamWording,
        switches: tuple[str, ...] = (),
    ) -> None:
        """Sort ``(key, kind, value)`` items into the request's fields and its parameters.

        ``switches`` are keys of the protocol's own taking a boolean.

        :raises KernelError: ``INVALID_ARG`` in the protocol's wording for a value of the
            wrong kind or range, or a reserved key.
        """
        for key, kind, value in items:
            if key == "sequence_id":
                if kind == "string" or (kind in _INTEGERS and value >= 0):
                    self.correlation_id = value
                else:
                    raise wording.wrong_kind(key, ("int", "string"))
            elif key in ("sequence_start", "sequence_end"):
                if kind != "bool":
                    raise wording.wrong_kind(key, ("bool",))
                if value:
                    self.flags |= (
                        RequestFlags.SEQUENCE_START
                        if key == "sequence_start"
                        else RequestFlags.SEQUENCE_END
                    )
            elif key in ("priority", "timeout"):
                if kind not in _INTEGERS or value < 0:
                    raise wording.wrong_kind(key, _INTEGERS)
                if key == "priority":
                    self.priority = value
                else:
                    self.timeout_us = value
            elif key == EMPTY_FINAL or key in switches:
                if kind != "bool":
                    raise wording.wrong_kind(key, ("bool",))
                if key == EMPTY_FINAL:
                    self.empty_final = value
                else:
                    self.switches[key] = value
            elif key.startswith(_RESERVED_PREFIX):
                raise wording.reserved()
            elif kind in _CUSTOM:
                self.parameters[key] = value
            else:
                raise wording.bad_custom(key)

    def request_fields(self) -> dict[str, Any]:
        """The :class:`~kernel._inference.InferenceRequest` keyword arguments they set."""
        return {
            "parameters": self.parameters,
            "correlation_id": self.correlation_id,
            "flags": self.flags,
            "priority": self.priority,
            "timeout_us": self.timeout_us,
        }
