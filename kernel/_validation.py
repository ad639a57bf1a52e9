"""Checking a request against its model's config, with Triton's wording (clients match on it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest
from kernel._proto.inference import ModelConfig
from kernel.signature import implicit_inputs
from kernel.tensors import config_type_to_datatype, datatype_of, datatype_to_dtype

__all__ = ["RequestValidator", "TensorSpec"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An input or output as the config declares it (without the batch dimension)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    optional: bool = False
    ragged: bool = False


def _shape_matches(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(
        d == -1 or d == s for s, d in zip(shape, dims, strict=True)
    )


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _names(names: list[str]) -> str:
    # Triton's rendering, including its "]" for an empty list (it drops the opening bracket
    # along with the trailing comma it expected to find).
    text = "[" + "".join(f"'{n}'," for n in names)
    return text[:-1] + "]"


_BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to"
    " be prepended to each input shape. If you want to specify the full shape including the"
    " batch dim in your input dims config, try setting max_batch_size to zero. See the model"
    " configuration docs for more info on max_batch_size."
)


class RequestValidator:
    """Validates requests for one model version; built once per load from its config."""

    def __init__(self, config: ModelConfig) -> None:
        self.model_name = config.name
        self.max_batch_size = config.max_batch_size
        self.inputs = {
            t.name: TensorSpec(
                t.name,
                config_type_to_datatype(t.data_type.name or ""),
                tuple(t.dims),
                tuple(t.reshape.shape) if t.reshape is not None else None,
                t.optional,
                t.allow_ragged_batch,
            )
            for t in config.input
        }
        self.outputs = {
            t.name: TensorSpec(
                t.name, config_type_to_datatype(t.data_type.name or ""), tuple(t.dims)
            )
            for t in config.output
        }
        self.required = [s.name for s in self.inputs.values() if not s.optional]
        # Control and state inputs of the sequence batcher are supplied by the kernel.
        self.implicit = set(implicit_inputs(config))
        self._plan = self._fast_plan()

    def _fast_plan(self) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]] | None:
        """Per input, the numpy dtype and the dims a request that needs nothing done to it
        has (every input given, exact dims, no reshape): :meth:`validate` accepts such a
        request with a dict lookup, an identity and a tuple comparison per input. None when
        the config leaves nothing to decide once (optional, ragged, reshaped, implicit or
        BYTES inputs, variable dims): those requests take the full checks."""
        if self.implicit or not self.inputs:
            return None
        plan: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {}
        for spec in self.inputs.values():
            if spec.optional or spec.ragged or spec.reshape is not None or -1 in spec.dims:
                return None
            if spec.datatype in ("BYTES", "BF16"):
                return None
            try:
                plan[spec.name] = (datatype_to_dtype(spec.datatype), spec.dims)
            except KernelError:
                return None
        return plan

    def _error(self, request: InferenceRequest, text: str) -> KernelError:
        rid = request.id or "<id_unknown>"
        return KernelError(Status.INVALID_ARG, f"[request id: {rid}] {text}")

    def validate(self, request: InferenceRequest) -> int:
        """Check names, datatypes and shapes; apply ``reshape``; return the batch size.

        The checks run in Triton's order (requested outputs, input count, then each input), so
        a request with several problems gets the message Triton gives.

        :raises KernelError: ``INVALID_ARG`` with Triton's message for the first problem.
        """
        if self.outputs:
            for name in request.requested_output_names:
                if name not in self.outputs:
                    raise KernelError(
                        Status.INVALID_ARG,
                        f"unexpected inference output '{name}' for model '{self.model_name}'",
                    )
        given = request.inputs
        plan = self._plan
        if plan is not None and len(given) == len(plan):
            batch = self._fast(plan, given)
            if batch:
                return batch
        return self._validate(request)

    def _fast(
        self,
        plan: dict[str, tuple[np.dtype[Any], tuple[int, ...]]],
        given: dict[str, npt.NDArray[Any]],
    ) -> int:
        """The batch size of a request the plan accepts as it is; 0 when it does not (the full
        checks then decide, and word any problem)."""
        if self.max_batch_size <= 0:
            for name, array in given.items():
                expected = plan.get(name)
                if expected is None or array.dtype is not expected[0]:
                    return 0
                if array.shape != expected[1]:
                    return 0
            return 1
        batch = -1
        for name, array in given.items():
            expected = plan.get(name)
            if expected is None or array.dtype is not expected[0]:
                return 0
            shape = array.shape
            if not shape or shape[1:] != expected[1]:
                return 0
            if batch < 0:
                batch = shape[0]
            elif shape[0] != batch:
                return 0
        return batch if 1 <= batch <= self.max_batch_size else 0

    def _validate(self, request: InferenceRequest) -> int:
        """Every check, in Triton's order after the requested outputs (see validate)."""
        model = self.model_name
        given = request.inputs
        # Triton walks a request's inputs in reverse order (its hash map's order for few
        # inputs), which decides the listing below and which input a message names first.
        present = [n for n in reversed(given) if n not in self.implicit]
        if len(present) > len(self.inputs) or len(present) < len(self.required):
            missing = [n for n in self.required if n not in given]
            if len(self.required) == len(self.inputs):
                expected = f"expected {len(self.inputs)} inputs"
            else:
                expected = (
                    f"expected number of inputs between {len(self.required)} and {len(self.inputs)}"
                )
            raise self._error(
                request,
                f"{expected} but got {len(present)} inputs for model '{model}'. Got input(s)"
                f" {_names(present)}, but missing required input(s) {_names(missing)}."
                " Please provide all required input(s).",
            )
        batch_size = 0
        for name, array in reversed(given.items()):
            spec = self.inputs.get(name)
            if spec is None:
                if name in self.implicit:
                    continue
                raise KernelError(
                    Status.INVALID_ARG, f"unexpected inference input '{name}' for model '{model}'"
                )
            datatype = datatype_of(array)
            if datatype != spec.datatype:
                raise self._error(
                    request,
                    f"inference input '{name}' data-type is '{datatype}', but model '{model}'"
                    f" expects '{spec.datatype}'",
                )
            shape = tuple(array.shape)
            if self.max_batch_size > 0:
                if not shape:
                    raise self._error(
                        request,
                        f"input '{name}' has no shape but model requires batch dimension for"
                        f" '{model}'",
                    )
                this_batch, shape = shape[0], shape[1:]
                if batch_size == 0:
                    batch_size = this_batch
                elif this_batch != batch_size and not spec.ragged:
                    raise self._error(
                        request,
                        f"input '{name}' batch size does not match other inputs for '{model}'",
                    )
            if shape != spec.dims and not spec.ragged and not _shape_matches(shape, spec.dims):
                expected_shape = ((-1,) if self.max_batch_size > 0 else ()) + spec.dims
                raise self._error(
                    request,
                    f"unexpected shape for input '{name}' for model '{model}'. Expected"
                    f" {_fmt(expected_shape)}, got {_fmt(tuple(array.shape))}. "
                    + (_BATCH_NOTE if self.max_batch_size > 0 else ""),
                )
            if spec.reshape is not None:
                lead = tuple(array.shape[:1]) if self.max_batch_size > 0 else ()
                given[name] = array.reshape(lead + spec.reshape)
        if self.max_batch_size > 0:
            if batch_size < 1 or batch_size > self.max_batch_size:
                raise self._error(
                    request,
                    f"inference request batch-size must be <= {self.max_batch_size} for '{model}'",
                )
        else:
            batch_size = 1
        return batch_size
