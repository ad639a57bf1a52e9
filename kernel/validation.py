"""Checking a request against its model's config, with Triton's wording (clients match on it)."""

from __future__ import annotations

from dataclasses import dataclass

from kernel._proto.inference import ModelConfig
from kernel.errors import KernelError, Status
from kernel.inference import InferenceRequest
from kernel.tensors import config_type_to_datatype, datatype_of

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
        self.implicit: set[str] = set()
        if config.sequence_batching is not None:
            for control in config.sequence_batching.control_input:
                self.implicit.add(control.name)
            for state in config.sequence_batching.state:
                self.implicit.add(state.input_name)

    def _error(self, request: InferenceRequest, text: str) -> KernelError:
        rid = request.id or "<id_unknown>"
        return KernelError(Status.INVALID_ARG, f"[request id: {rid}] {text}")

    def validate(self, request: InferenceRequest) -> int:
        """Check names, datatypes and shapes; apply ``reshape``; return the batch size.

        :raises KernelError: ``INVALID_ARG`` with Triton's message for the first problem.
        """
        model = self.model_name
        batch_size = 0
        given = request.inputs
        for name, array in given.items():
            spec = self.inputs.get(name)
            if spec is None:
                if name in self.implicit:
                    continue
                raise self._error(
                    request, f"unexpected inference input '{name}' for model '{model}'"
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
                        f"input '{name}' for model '{model}' has no batch dimension",
                    )
                this_batch, shape = shape[0], shape[1:]
                if batch_size == 0:
                    batch_size = this_batch
                elif this_batch != batch_size and not spec.ragged:
                    raise self._error(
                        request,
                        f"input '{name}' batch size does not match other inputs for '{model}'",
                    )
            if not spec.ragged and not _shape_matches(shape, spec.dims):
                expected = ((-1,) if self.max_batch_size > 0 else ()) + spec.dims
                got = tuple(array.shape)
                raise self._error(
                    request,
                    f"unexpected shape for input '{name}' for model '{model}'. Expected"
                    f" {_fmt(expected)}, got {_fmt(got)}. ",
                )
            if spec.reshape is not None:
                lead = tuple(array.shape[:1]) if self.max_batch_size > 0 else ()
                given[name] = array.reshape(lead + spec.reshape)
        missing = [n for n in self.required if n not in given]
        if missing:
            present = [n for n in given if n not in self.implicit]
            raise self._error(
                request,
                f"expected {len(self.required)} inputs but got {len(present)} inputs for model"
                f" '{model}'. Got input(s) {present}, but missing required input(s) {missing}."
                " Please provide all required input(s).",
            )
        if self.max_batch_size > 0:
            if batch_size < 1 or batch_size > self.max_batch_size:
                raise self._error(
                    request,
                    f"inference request batch-size must be <= {self.max_batch_size} for '{model}'",
                )
        else:
            batch_size = 1
        if self.outputs:
            for name in request.requested_output_names:
                if name not in self.outputs:
                    raise self._error(
                        request, f"unexpected inference output '{name}' for model '{model}'"
                    )
        return batch_size
