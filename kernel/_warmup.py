"""Triton's ``model_warmup``: synthetic requests each instance executes before the model is READY.

A framework's first execution pays for lazy work (kernel selection, memory arenas, JIT), and
without warmup the first client pays it. As in Triton, every sample of the config runs on every
instance, ``count`` times (0 or 1: once), right after the instance initialized; each run is one
batch of ``batch_size`` requests of batch size 1, straight to the instance (no scheduler, no
statistics). An error in any response, or a request left unanswered, fails the load: the model
becomes UNAVAILABLE with that reason instead of serving requests it cannot answer.

Sample data, per input: ``zero_data`` (zeros, empty strings), ``random_data`` (values from a
fixed seed), or ``input_data_file``, a file of the model's ``warmup/`` folder holding the raw
elements in row-major order (a BYTES element is a 4-byte little-endian length, then its bytes).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt

from kernel._backend import InstanceContext, ModelInstance
from kernel._errors import KernelError, Status
from kernel._hooks import is_async
from kernel._inference import InferenceRequest
from kernel._proto.inference import DataType, ModelConfig, ModelWarmup, ModelWarmupInput
from kernel.tensors import config_type_to_datatype, datatype_to_dtype

__all__ = ["WarmupSample", "run_warmup", "warmup_samples"]

Array = npt.NDArray[Any]

WARMUP_FOLDER = "warmup"
RESPONSE_TIMEOUT_S = 600.0
"""How long a warmup run may wait for a (decoupled) model's final response."""


@dataclass(frozen=True, slots=True)
class WarmupSample:
    """One ``model_warmup`` entry, its input arrays made (without the batch dimension)."""

    name: str
    batch_size: int
    count: int
    inputs: Mapping[str, Array]


def _error(model: str, sample: str, text: str) -> KernelError:
    return KernelError(Status.INVALID_ARG, f"model '{model}': warmup sample '{sample}': {text}")


def warmup_samples(config: ModelConfig, model_dir: Path | None) -> list[WarmupSample]:
    """The samples of ``config.model_warmup``, their data made or read.

    :raises KernelError: ``INVALID_ARG`` for a sample that cannot run as written: a batch
        size the model cannot take, variable dims, a missing or mis-sized data file.
    """
    samples = []
    for index, warmup in enumerate(config.model_warmup):
        name = warmup.name or f"sample {index}"
        samples.append(_sample(config, warmup, name, model_dir))
    return samples


def _sample(
    config: ModelConfig, warmup: ModelWarmup, name: str, model_dir: Path | None
) -> WarmupSample:
    model = config.name
    if warmup.batch_size < 1:
        raise _error(model, name, "batch_size must be at least 1")
    if config.max_batch_size == 0 and warmup.batch_size != 1:
        raise _error(model, name, "a model without batching takes batch_size 1 only")
    if config.max_batch_size and warmup.batch_size > config.max_batch_size:
        raise _error(
            model,
            name,
            f"batch_size {warmup.batch_size} exceeds the model's max_batch_size"
            f" {config.max_batch_size}",
        )
    rng = np.random.default_rng(_seed(name))
    # By name: a protobuf map's order is not stable across processes, and random data and the
    # first error reported should be.
    inputs = {
        input_name: _input_array(model, name, input_name, spec, model_dir, rng)
        for input_name, spec in sorted(warmup.inputs.items())
    }
    return WarmupSample(name, warmup.batch_size, max(1, warmup.count), inputs)


def _seed(name: str) -> int:
    """A fixed seed per sample name: random warmup data is the same at every load."""
    return sum(name.encode()) + 1


def _input_array(
    model: str,
    sample: str,
    name: str,
    spec: ModelWarmupInput,
    model_dir: Path | None,
    rng: np.random.Generator,
) -> Array:
    if spec.data_type == DataType.TYPE_INVALID:
        raise _error(model, sample, f"input '{name}' needs a data_type")
    dims = tuple(int(d) for d in spec.dims)
    if any(d < 0 for d in dims):
        raise _error(model, sample, f"input '{name}' has variable dims {list(dims)}")
    dtype = datatype_to_dtype(config_type_to_datatype(spec.data_type.name or ""))
    count = math.prod(dims)
    if spec.input_data_file is not None:
        return _from_file(model, sample, name, spec.input_data_file, model_dir, dtype, dims)
    if dtype == np.dtype(np.object_):
        if spec.random_data:
            words = [bytes(rng.integers(97, 123, 8, dtype=np.uint8)) for _ in range(count)]
            return np.array(words, dtype=object).reshape(dims)
        return np.full(dims, b"", dtype=object)
    if spec.random_data:
        if dtype.kind == "b":
            return rng.integers(0, 2, dims).astype(dtype)
        if dtype.kind in "iu":
            return rng.integers(0, 100, dims).astype(dtype)
        return rng.random(dims).astype(dtype)
    return np.zeros(dims, dtype=dtype)  # zero_data, and Triton's default when none is set


def _from_file(
    model: str,
    sample: str,
    name: str,
    file: str,
    model_dir: Path | None,
    dtype: np.dtype[Any],
    dims: tuple[int, ...],
) -> Array:
    if model_dir is None:
        raise _error(model, sample, f"input '{name}' reads a file, but the model has no folder")
    folder = (model_dir / WARMUP_FOLDER).resolve()
    path = (folder / file).resolve()
    if not path.is_relative_to(folder):
        raise _error(model, sample, f"input_data_file '{file}' is outside the warmup folder")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _error(model, sample, f"cannot read input_data_file '{path}': {exc}") from exc
    count = math.prod(dims)
    if dtype == np.dtype(np.object_):
        return np.array(_strings(model, sample, path, data, count), dtype=object).reshape(dims)
    if len(data) != count * dtype.itemsize:
        raise _error(
            model,
            sample,
            f"input_data_file '{path}' holds {len(data)} bytes, input '{name}' of dims"
            f" {list(dims)} needs {count * dtype.itemsize}",
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def _strings(model: str, sample: str, path: Path, data: bytes, count: int) -> list[bytes]:
    items: list[bytes] = []
    offset = 0
    while len(items) < count:
        if offset + 4 > len(data):
            break
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + size > len(data):
            break
        items.append(data[offset : offset + size])
        offset += size
    if len(items) != count or offset != len(data):
        raise _error(
            model,
            sample,
            f"input_data_file '{path}' does not hold exactly {count} length-prefixed strings",
        )
    return items


async def run_warmup(
    samples: list[WarmupSample],
    instance: ModelInstance,
    context: InstanceContext,
    *,
    batching: bool,
    decoupled: bool,
    implicit: Mapping[str, Array] | None = None,
) -> None:
    """Run every sample ``count`` times on one initialized instance.

    ``implicit`` are inputs the kernel supplies itself (a sequence model's initial state),
    added where a sample does not give them.

    :raises KernelError: ``UNAVAILABLE`` naming the sample and the instance's error.
    """
    model = context.model.name
    for sample in samples:
        for _ in range(sample.count):
            requests = [
                _request(model, sample, batching, implicit) for _ in range(sample.batch_size)
            ]
            try:
                await _execute(instance, requests)
                await _collect(requests, decoupled=decoupled)
            except Exception as exc:
                error = KernelError.wrap(exc)
                raise KernelError(
                    Status.UNAVAILABLE,
                    f"model '{model}' failed to warm up instance '{context.name}' with sample"
                    f" '{sample.name}': {error.message}",
                ) from exc
            finally:
                context.take_reported_times()  # warmup counts in no statistics


def _request(
    model: str, sample: WarmupSample, batching: bool, implicit: Mapping[str, Array] | None
) -> InferenceRequest:
    inputs = {
        name: array.reshape((1, *array.shape)) if batching else array
        for name, array in sample.inputs.items()
    }
    for name, array in (implicit or {}).items():
        inputs.setdefault(name, array)
    request = InferenceRequest(model, inputs, id=f"warmup {sample.name}")
    request.batch_size = 1
    return request


async def _execute(instance: ModelInstance, requests: list[InferenceRequest]) -> None:
    if is_async(instance.execute):
        await instance.execute(requests)  # type: ignore[misc]
    else:
        await anyio.to_thread.run_sync(instance.execute, requests)


async def _collect(requests: list[InferenceRequest], *, decoupled: bool) -> None:
    """Every response of every request; the first error raised."""
    for request in requests:
        if not request.answered and not (decoupled and request.sender_taken):
            raise KernelError(
                Status.INTERNAL, "execute returned without answering the warmup request"
            )
    with anyio.move_on_after(RESPONSE_TIMEOUT_S):
        for request in requests:
            async for response in request.responses():
                if response.error is not None:
                    raise response.error
        return
    raise KernelError(
        Status.INTERNAL, f"no final response within {RESPONSE_TIMEOUT_S:.0f} s of warmup"
    )
