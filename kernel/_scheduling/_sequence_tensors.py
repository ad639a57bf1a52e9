"""The tensors the sequence batcher adds to a request: control inputs and implicit state.

Control inputs (``control_input``) tell the model where a request sits in its sequence: START and
END as the configured false/true values, READY (always true: the kernel never pads batches with
empty slots) and CORRID, the correlation id. Each is shaped ``[1]``, or ``[1, 1]`` for a model
with batching (one row per request), as Triton shapes them.

Implicit state (``state``) is carried by the kernel: the first request of a sequence gets the
initial state as input ``input_name``; each later one gets what the previous response held as
output ``output_name``. The backend computes the state output on every request, whether or not
the client asked for it (:meth:`SequenceTensors.request_state`); it reaches the client only if the
config declares it as an output and the client asked for it (or for every output), as in Triton.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kernel._errors import KernelError, Status
from kernel._inference import InferenceResponse
from kernel._proto.inference import (
    DataType,
    ModelConfig,
    ModelSequenceBatchingControl,
    ModelSequenceBatchingState,
)
from kernel._proto.inference import ModelSequenceBatchingControlKind as Kind
from kernel.tensors import config_type_to_datatype, datatype_to_dtype

__all__ = ["SequenceTensors"]

Array = npt.NDArray[Any]
_CORRID_TYPES = {
    DataType.TYPE_INT32,
    DataType.TYPE_INT64,
    DataType.TYPE_UINT32,
    DataType.TYPE_UINT64,
    DataType.TYPE_STRING,
}


def _frozen(array: Array) -> Array:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True)
class _Flag:
    """A boolean control (START, END, READY): its input name and its two shaped values."""

    name: str
    false: Array
    true: Array


@dataclass(frozen=True, slots=True)
class _State:
    input_name: str
    output_name: str
    initial: Array
    returned: bool
    """Whether the config declares the output, so the client may see it."""


class SequenceTensors:
    """Builds the control and state inputs of one sequence model from its config."""

    def __init__(self, config: ModelConfig, model_dir: Path | None) -> None:
        settings = config.sequence_batching
        assert settings is not None
        self.model_name = config.name
        self._shape = (1, 1) if config.max_batch_size > 0 else (1,)
        self._flags: dict[Kind, list[_Flag]] = {}
        self._corrid: list[tuple[str, DataType]] = []
        for control_input in settings.control_input:
            if len(control_input.control) != 1:
                raise self._error(
                    f"control input '{control_input.name}' must have exactly one control"
                )
            control = control_input.control[0]
            if control.kind == Kind.CONTROL_SEQUENCE_CORRID:
                if control.data_type not in _CORRID_TYPES:
                    raise self._error(
                        f"control input '{control_input.name}': CORRID must be TYPE_INT32,"
                        " TYPE_INT64, TYPE_UINT32, TYPE_UINT64 or TYPE_STRING"
                    )
                self._corrid.append((control_input.name, control.data_type))
            else:
                flag = self._flag(control_input.name, control)
                self._flags.setdefault(control.kind, []).append(flag)
        declared = {t.name for t in config.output}
        self._states = [
            _State(
                s.input_name,
                s.output_name,
                self._initial_state(s, model_dir),
                s.output_name in declared,
            )
            for s in settings.state
        ]

    def _error(self, text: str) -> KernelError:
        return KernelError(
            Status.INVALID_ARG, f"model '{self.model_name}': sequence_batching: {text}"
        )

    def _flag(self, name: str, control: ModelSequenceBatchingControl) -> _Flag:
        given = [
            (values, dtype)
            for values, dtype in (
                (control.int32_false_true, np.int32),
                (control.fp32_false_true, np.float32),
                (control.bool_false_true, np.bool_),
            )
            if values
        ]
        if len(given) != 1 or len(given[0][0]) != 2:
            raise self._error(
                f"control input '{name}' must give two values in exactly one of"
                " int32_false_true, fp32_false_true or bool_false_true"
            )
        (false, true), dtype = given[0]
        return _Flag(
            name,
            _frozen(np.full(self._shape, false, dtype=dtype)),
            _frozen(np.full(self._shape, true, dtype=dtype)),
        )

    def _initial_state(self, state: ModelSequenceBatchingState, model_dir: Path | None) -> Array:
        datatype = config_type_to_datatype(state.data_type.name or "")
        dtype = datatype_to_dtype(datatype)
        lead = self._shape[:-1]
        if not state.initial_state:
            # No initial state given: zeros, with variable dims taken as 1.
            dims = tuple(1 if d < 0 else d for d in state.dims)
            return _frozen(self._zeros(lead + dims, dtype))
        initial = state.initial_state[0]
        dims = tuple(initial.dims)
        if initial.data_file is not None:
            if model_dir is None:
                raise self._error(f"initial state of '{state.input_name}' needs the model folder")
            path = model_dir / "initial_state" / initial.data_file
            try:
                data = np.fromfile(path, dtype=dtype)
            except OSError as exc:
                raise self._error(f"cannot read initial state file '{path}': {exc}") from exc
            if data.size != int(np.prod(dims)):
                raise self._error(
                    f"initial state file '{path}' holds {data.size} elements, dims {list(dims)}"
                    f" need {int(np.prod(dims))}"
                )
            return _frozen(data.reshape(lead + dims))
        return _frozen(self._zeros(lead + dims, dtype))

    @staticmethod
    def _zeros(shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
        if dtype == np.dtype(np.object_):
            return np.full(shape, b"", dtype=object)
        return np.zeros(shape, dtype=dtype)

    @property
    def names(self) -> set[str]:
        """Every input this class supplies."""
        names = {f.name for flags in self._flags.values() for f in flags}
        names.update(name for name, _ in self._corrid)
        names.update(s.input_name for s in self._states)
        return names

    def initial_state(self) -> dict[str, Array]:
        """The state inputs of a sequence's first request."""
        return {s.input_name: s.initial for s in self._states}

    def controls(self, corrid: int | str, *, start: bool, end: bool) -> dict[str, Array]:
        """The control inputs of one request.

        :raises KernelError: ``INVALID_ARG`` when a string correlation id meets a numeric CORRID.
        """
        tensors: dict[str, Array] = {}
        for kind, value in (
            (Kind.CONTROL_SEQUENCE_START, start),
            (Kind.CONTROL_SEQUENCE_END, end),
            (Kind.CONTROL_SEQUENCE_READY, True),
        ):
            for flag in self._flags.get(kind, ()):
                tensors[flag.name] = flag.true if value else flag.false
        for name, data_type in self._corrid:
            tensors[name] = self._corrid_tensor(corrid, data_type)
        return tensors

    def _corrid_tensor(self, corrid: int | str, data_type: DataType) -> Array:
        if data_type == DataType.TYPE_STRING:
            return np.full(self._shape, str(corrid).encode(), dtype=object)
        if isinstance(corrid, str):
            raise KernelError(
                Status.INVALID_ARG,
                f"inference request to model '{self.model_name}' has the string correlation ID"
                f" '{corrid}', but the model's CORRID control is {data_type.name}",
            )
        dtype = datatype_to_dtype(config_type_to_datatype(data_type.name or ""))
        return np.full(self._shape, corrid, dtype=dtype)

    def request_state(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        """The output names to ask the backend for, given those the client asked for: an empty
        list already means every output, state outputs included; otherwise the state outputs
        are added, since the next request of the sequence needs them."""
        if not wanted:
            return wanted
        return wanted + tuple(s.output_name for s in self._states if s.output_name not in wanted)

    def capture(
        self, response: InferenceResponse, state: dict[str, Array], wanted: tuple[str, ...]
    ) -> None:
        """Keep the state outputs of ``response`` in ``state``; hide the ones the config does
        not declare or the client did not ask for (``wanted``, empty for every output)."""
        if response.error is not None:
            return
        for spec in self._states:
            value = response.outputs.get(spec.output_name)
            if value is None:
                continue
            state[spec.input_name] = value
            if not spec.returned or (wanted and spec.output_name not in wanted):
                del response.outputs[spec.output_name]
