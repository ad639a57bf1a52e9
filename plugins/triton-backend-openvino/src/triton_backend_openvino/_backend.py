"""The ``openvino`` backend: the kernel's Backend, Model and ModelInstance for OpenVINO models.

Each instance compiles the model once and runs its batches through an ``ov.AsyncInferQueue``
sized to the compiled model's optimal number of infer requests (one per stream).

``execute`` is a plain ``def``: the kernel runs it in a worker thread, where it gathers each
batch's inputs, starts it on the queue and waits for the queue to drain. Gathering (concatenating,
padding) and splitting outputs are CPU work that must not run on the event loop, and
``start_async`` itself blocks while every infer request is busy; OpenVINO releases the GIL while
it computes and waits, so a parked worker thread per instance is the whole cost. Each inference's
callback, on an OpenVINO thread, answers its requests as soon as its outputs are ready. A batch
of a model without batching runs its requests as separate inferences, in parallel on the streams.

Memory usage (the statistics API's ``memory_usage``): the bytes of the prepared model's
``Constant`` nodes (its weights) once per compiled instance, on the CPU. OpenVINO tells no
compiled model's memory (its runtime model holds no constants): the intermediate buffers and the
plugin's weight repacking are not counted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import openvino as ov  # type: ignore[import-untyped, unused-ignore]

from kernel import (
    Backend,
    BackendAttributes,
    BackendContext,
    InferenceRequest,
    InstanceContext,
    KernelError,
    MemoryUsage,
    Model,
    ModelConfig,
    ModelContext,
    ModelInstance,
    Status,
)
from kernel.signature import DEFAULT_MAX_BATCH_SIZE, format_shape, is_complete, output_reshape
from triton_backend_openvino._compile import (
    DEVICE,
    PreparedModel,
    compile_model,
    model_path,
    openvino_message,
    prepare,
    read_model,
)
from triton_backend_openvino._settings import OpenVinoSettings, read_settings
from triton_backend_openvino._signature import complete_config, model_signature
from triton_backend_openvino._tensors import shared_tensor, tensor_signature

__all__ = ["OpenVinoBackend", "OpenVinoInstance", "OpenVinoModel"]


class OpenVinoBackend(Backend):
    """Serves ``backend: "openvino"`` models.

    Backend config (``--backend-config=openvino,<key>=<value>``): ``default-max-batch-size``
    (default 4), the ``max_batch_size`` auto-complete gives a model whose layout can batch.
    """

    attributes: ClassVar[BackendAttributes] = BackendAttributes(
        parallel_instance_loading=True, preferred_instance_kind="KIND_CPU"
    )

    def __init__(self) -> None:
        self.default_max_batch_size = DEFAULT_MAX_BATCH_SIZE

    def initialize(self, context: BackendContext) -> None:
        self.default_max_batch_size = context.int_setting(
            "default-max-batch-size", self.default_max_batch_size
        )
        context.logger.info("OpenVINO %s", ov.get_version())

    def create_model(self, context: ModelContext) -> OpenVinoModel:
        return OpenVinoModel(context, self)


class OpenVinoModel(Model):
    """One version of a model: its settings and the ``ov.Model`` shaped for its config."""

    def __init__(self, context: ModelContext, backend: OpenVinoBackend) -> None:
        super().__init__(context)
        self.backend = backend
        self.settings = OpenVinoSettings()
        self.prepared: PreparedModel | None = None
        self.instances: list[OpenVinoInstance] = []

    def auto_complete_config(self, config: ModelConfig) -> ModelConfig:
        """Fill missing inputs/outputs and batching from the model file (Triton's rules)."""
        if is_complete(config):
            return config
        model = read_model(model_path(self.context), config.name)
        return complete_config(
            config, model, self.backend.default_max_batch_size, self.context.logger
        )

    def initialize(self) -> None:
        config = self.context.config
        self.settings = read_settings(config, self.context.logger)
        model = read_model(model_path(self.context), config.name)
        self.prepared = prepare(model, config, self.settings)

    def create_instance(self, context: InstanceContext) -> OpenVinoInstance:
        instance = OpenVinoInstance(context, self)
        self.instances.append(instance)
        return instance

    def memory_usage(self) -> list[MemoryUsage]:
        """The weights (``Constant`` bytes) once per compiled instance, on the CPU."""
        assert self.prepared is not None, "reported after initialize"
        weights = sum(
            op.get_byte_size()
            for op in self.prepared.model.get_ops()
            if op.get_type_name() == "Constant"
        )
        compiled = sum(1 for instance in self.instances if instance.compiled is not None)
        return [MemoryUsage("CPU", 0, weights * compiled)] if weights and compiled else []

    def finalize(self) -> None:
        self.prepared = None


@dataclass(frozen=True, slots=True)
class _InputPlan:
    name: str
    shape: tuple[int, ...] | None
    """The config's ``reshape`` (without the batch dim) to give the array, else ``None``."""


@dataclass(frozen=True, slots=True)
class _OutputPlan:
    name: str
    dims: tuple[int, ...] | None
    """The config's dims (without the batch dim) to give the model's output, else ``None``."""


@dataclass(slots=True)
class _Job:
    """One inference: a group of requests run together, and what it needs until answered."""

    requests: list[InferenceRequest]
    rows: int
    """The requests' rows (their batch sizes summed); 0 for a model without batching."""
    arrays: dict[str, npt.NDArray[Any]]
    """The input arrays OpenVINO reads without a copy: kept alive until the inference ends."""
    started_ns: int = 0
    times: list[int] = field(default_factory=lambda: [0, 0, 0])
    """Compute input, infer and output nanoseconds."""


class OpenVinoInstance(ModelInstance):
    """One compiled model and its async infer queue."""

    def __init__(self, context: InstanceContext, model: OpenVinoModel) -> None:
        super().__init__(context)
        self.model = model
        self.compiled: ov.CompiledModel | None = None
        self.queue: ov.AsyncInferQueue | None = None
        self.responder: _Responder | None = None
        self.batching = False
        self.max_batch_size = 0
        self.fixed_batch = False
        self.batch_padding = False
        self.inputs: dict[str, _InputPlan] = {}
        self.accepts: dict[str, tuple[tuple[int, ...] | None, np.dtype[Any]]] = {}

    def initialize(self) -> None:
        ctx, model = self.context, self.model
        config = ctx.model.config
        if ctx.kind != "KIND_CPU":
            raise KernelError(
                Status.INVALID_ARG,
                f"unable to load model '{config.name}', the openvino backend supports only"
                f" KIND_CPU instances (instance '{ctx.name}' is {ctx.kind})",
            )
        assert model.prepared is not None, "the model initializes before its instances"
        self.compiled = compile_model(model.prepared, model.settings, config)
        self.batching = config.max_batch_size > 0
        self.max_batch_size = config.max_batch_size
        self.fixed_batch = model.prepared.fixed_batch
        self.batch_padding = model.settings.batch_padding
        self.inputs = {
            t.name: _InputPlan(t.name, tuple(t.reshape.shape) if t.reshape is not None else None)
            for t in config.input
        }
        self.accepts = {
            name: (tensor_signature(port).dims, np.dtype(port.get_element_type().to_dtype()))
            for port in self.compiled.inputs
            for name in port.get_names()
        }
        signature = model_signature(self.compiled)
        outputs = tuple(
            _OutputPlan(o.name, output_reshape(o, signature.find("output", o.name)))
            for o in config.output
        )
        self.responder = _Responder(config.name, config.max_batch_size, self.fixed_batch, outputs)
        self.queue = self._new_queue()
        ctx.logger.info(
            "instance '%s' of model '%s' compiled for %s: %s streams, %d infer requests",
            ctx.name,
            config.name,
            DEVICE,
            self.compiled.get_property("NUM_STREAMS"),
            len(self.queue),
        )

    def _new_queue(self) -> ov.AsyncInferQueue:
        """A queue with one infer request per stream (OPTIMAL_NUMBER_OF_INFER_REQUESTS)."""
        queue = ov.AsyncInferQueue(self.compiled)
        queue.set_callback(self.responder)
        return queue

    def finalize(self) -> None:
        if self.queue is not None:
            with contextlib.suppress(Exception):  # a failure was answered when it happened
                self.queue.wait_all()
        self.queue = None
        self.compiled = None

    def execute(self, requests: Sequence[InferenceRequest]) -> None:
        """Start the batch on the queue, wait until every inference answered its requests."""
        assert self.queue is not None, "execute runs between initialize and finalize"
        groups = [list(requests)] if self.batching else [[r] for r in requests]
        jobs: list[_Job] = []
        for group in groups:
            try:
                jobs.append(self._start(group))
            except Exception as exc:
                if len(groups) == 1:
                    raise  # the kernel answers every request of the batch with it
                _fail(group, exc)
        try:
            self.queue.wait_all()
        except Exception as exc:  # an inference failed inside OpenVINO (its callback never ran)
            # The queue keeps the error and raises it from every later call: start afresh.
            self.queue = self._new_queue()
            for job in jobs:
                _fail(job.requests, exc)
        totals = [sum(job.times[i] for job in jobs) for i in range(3)]
        self.context.report_times(*totals)

    def _start(self, group: list[InferenceRequest]) -> _Job:
        """Gather the group's inputs into one array per input and start the inference."""
        assert self.queue is not None
        start = time.monotonic_ns()
        rows = sum(r.batch_size for r in group) if self.batching else 0
        target = rows
        if self.fixed_batch and rows != self.max_batch_size:
            if not self.batch_padding:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"expected requests with batch size '{self.max_batch_size}', got '{rows}':"
                    f" model '{self.context.model.name}' has a fixed batch dimension; set the"
                    " parameter ENABLE_BATCH_PADDING to YES to pad smaller batches (at a"
                    " performance cost)",
                )
            target = self.max_batch_size
        arrays = {name: self._gather(name, group, rows, target) for name in group[0].inputs}
        for name, array in arrays.items():
            self._check(name, array)
        job = _Job(group, rows, arrays)
        tensors = {name: shared_tensor(array) for name, array in arrays.items()}
        job.started_ns = time.monotonic_ns()
        job.times[0] = job.started_ns - start
        self.queue.start_async(tensors, job)
        return job

    def _check(self, name: str, array: npt.NDArray[Any]) -> None:
        """Refuse an input the compiled model would refuse, before it reaches the queue.

        OpenVINO's ``AsyncInferQueue`` (2026.4) loses an infer request when ``start_async``
        refuses a tensor: that request never becomes idle again and the next ``wait_all``
        waits forever. So a wrong shape or type must never get that far.

        :raises KernelError: ``INVALID_ARG`` naming the input and both shapes or types.
        """
        model = self.context.model.name
        accepted = self.accepts.get(name)
        if accepted is None:
            raise KernelError(Status.INVALID_ARG, f"model '{model}' has no input '{name}'")
        dims, dtype = accepted
        if array.dtype != dtype:
            raise KernelError(
                Status.INVALID_ARG,
                f"input '{name}' of model '{model}' is {array.dtype}, the model takes {dtype}",
            )
        if dims is not None and (
            len(dims) != array.ndim
            or any(d not in (-1, n) for d, n in zip(dims, array.shape, strict=True))
        ):
            raise KernelError(
                Status.INVALID_ARG,
                f"input '{name}' of model '{model}' has shape {format_shape(array.shape)},"
                f" the model takes {format_shape(dims)}",
            )

    def _gather(
        self, name: str, group: list[InferenceRequest], rows: int, target: int
    ) -> npt.NDArray[Any]:
        """A lone request's own array, else the requests' arrays concatenated (and padded)."""
        present = [a for a in (r.inputs.get(name) for r in group) if a is not None]
        if len(present) != len(group):
            raise KernelError(
                Status.INVALID_ARG,
                f"input '{name}' is given by some requests of a batch but not by all",
            )
        if target > rows:
            array = np.zeros((target, *present[0].shape[1:]), dtype=present[0].dtype)
            np.concatenate(present, out=array[:rows])
        elif len(present) == 1:
            array = present[0]
        else:
            array = np.concatenate(present)
        plan = self.inputs.get(name)
        if plan is not None and plan.shape is not None:
            array = array.reshape(((target,) if self.batching else ()) + plan.shape)
        return array


@dataclass(frozen=True, slots=True)
class _Responder:
    """The queue's callback, on an OpenVINO thread: answers a finished job's requests.

    Kept apart from the instance on purpose: a callback bound to the instance would close a
    reference cycle (instance -> queue -> callback -> instance), and the cyclic garbage collector
    could then free a compiled model from one of OpenVINO's own threads, which aborts the
    process (a streams executor cannot join its own thread).
    """

    model: str
    max_batch_size: int
    fixed_batch: bool
    outputs: tuple[_OutputPlan, ...]

    def __call__(self, infer_request: ov.InferRequest, job: _Job) -> None:
        done = time.monotonic_ns()
        job.times[1] = done - job.started_ns
        try:
            self._respond(infer_request, job)
        except Exception as exc:
            _fail(job.requests, exc)
        job.times[2] = time.monotonic_ns() - done

    def _respond(self, infer_request: ov.InferRequest, job: _Job) -> None:
        batching = self.max_batch_size > 0
        wanted = _wanted(job.requests, self.outputs)
        arrays: dict[str, npt.NDArray[Any]] = {}
        for plan in self.outputs:
            if plan.name not in wanted:
                continue
            data = infer_request.get_tensor(plan.name).data
            if batching:
                expected = self.max_batch_size if self.fixed_batch else job.rows
                if data.ndim == 0 or data.shape[0] != expected:
                    raise KernelError(
                        Status.INTERNAL,
                        f"output '{plan.name}' of model '{self.model}' has shape"
                        f" {format_shape(data.shape)}, whose first dimension is not the batch"
                        f" size {expected}",
                    )
                data = data[: job.rows]  # without the padding rows
            # A copy: the infer request reuses its output memory for the next inference.
            array = np.array(data)
            if plan.dims is not None:
                array = array.reshape(((job.rows,) if batching else ()) + plan.dims)
            arrays[plan.name] = array
        offset = 0
        for request in job.requests:
            chosen = request.requested_output_names or list(arrays)
            if batching and len(job.requests) > 1:
                rows = slice(offset, offset + request.batch_size)
                offset += request.batch_size
                request.respond({n: arrays[n][rows] for n in chosen})
            else:
                request.respond({n: arrays[n] for n in chosen})


def _wanted(requests: list[InferenceRequest], outputs: Sequence[_OutputPlan]) -> set[str]:
    wanted: set[str] = set()
    for request in requests:
        if not request.requested_output_names:
            return {o.name for o in outputs}
        wanted.update(request.requested_output_names)
    return wanted


def _fail(requests: list[InferenceRequest], exc: BaseException) -> None:
    """Answer each request still unanswered with ``exc``."""
    error = (
        exc
        if isinstance(exc, KernelError)
        else KernelError(Status.INTERNAL, f"OpenVINO: {openvino_message(exc)}")
    )
    for request in requests:
        request.fail(error)
