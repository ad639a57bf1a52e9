"""The ``onnxruntime`` backend: the kernel's Backend, Model and ModelInstance for ONNX models.

One ONNX Runtime session per instance, as Triton does. ``execute`` is a plain ``def``: the
kernel runs it in a worker thread and ``session.run`` releases the GIL, so instances of a model
compute on separate cores.

Memory usage (the statistics API's ``memory_usage``): the model file's initializer bytes once
per session, on the session's device (see :mod:`triton_backend_onnx._memory`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

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
from kernel.batching import gather, run_groups, scatter
from kernel.signature import (
    DEFAULT_MAX_BATCH_SIZE,
    auto_complete,
    check_config,
    format_shape,
    is_complete,
    output_reshape,
)
from triton_backend_onnx._memory import initializer_bytes
from triton_backend_onnx._session import inspection_session, model_path, open_session
from triton_backend_onnx._settings import SessionSettings, read_settings
from triton_backend_onnx._signature import RULES, session_signature
from triton_backend_onnx._tensors import bytes_to_str, str_to_bytes

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeInstance", "OnnxRuntimeModel"]


class OnnxRuntimeBackend(Backend):
    """Serves ``backend: "onnxruntime"`` / ``platform: "onnxruntime_onnx"`` models.

    Backend config (``--backend-config=onnxruntime,<key>=<value>``): ``default-max-batch-size``
    (default 4), the ``max_batch_size`` auto-complete gives a model that can batch.
    """

    attributes: ClassVar[BackendAttributes] = BackendAttributes(parallel_instance_loading=True)

    def __init__(self) -> None:
        self.default_max_batch_size = DEFAULT_MAX_BATCH_SIZE
        self.log_lock = threading.Lock()

    def initialize(self, context: BackendContext) -> None:
        self.default_max_batch_size = context.int_setting(
            "default-max-batch-size", self.default_max_batch_size
        )
        context.logger.info("onnxruntime %s (%s)", ort.__version__, ort.get_device())

    def create_model(self, context: ModelContext) -> OnnxRuntimeModel:
        return OnnxRuntimeModel(context, self)


class OnnxRuntimeModel(Model):
    """One version of an ONNX model: its file, its settings, its signature."""

    def __init__(self, context: ModelContext, backend: OnnxRuntimeBackend) -> None:
        super().__init__(context)
        self.backend = backend
        self.path: Path | None = None
        self.settings = SessionSettings()
        self.instances: list[OnnxRuntimeInstance] = []

    def auto_complete_config(self, config: ModelConfig) -> ModelConfig:
        """Fill missing inputs/outputs and batching from the model file (Triton's rules)."""
        if is_complete(config):
            return config
        session = inspection_session(model_path(self.context), config.name)
        return auto_complete(
            config,
            session_signature(session),
            default_max_batch_size=self.backend.default_max_batch_size,
            rules=RULES,
            logger=self.context.logger,
        )

    def initialize(self) -> None:
        self.settings = read_settings(self.context.config)
        self.path = model_path(self.context)

    def create_instance(self, context: InstanceContext) -> OnnxRuntimeInstance:
        instance = OnnxRuntimeInstance(context, self)
        self.instances.append(instance)
        return instance

    def memory_usage(self) -> list[MemoryUsage]:
        """The initializers' bytes once per session, on the device the session runs on."""
        assert self.path is not None, "reported after initialize"
        weights = initializer_bytes(self.path)
        devices: Counter[tuple[str, int]] = Counter()
        for instance in self.instances:
            if instance.session is None:
                continue
            provider = instance.session.get_providers()[0]
            on_gpu = provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
            devices["GPU" if on_gpu else "CPU", instance.context.device_id if on_gpu else 0] += (
                weights
            )
        return [MemoryUsage(kind, index, size) for (kind, index), size in sorted(devices.items())]


@dataclass(frozen=True, slots=True)
class _OutputPlan:
    name: str
    dims: tuple[int, ...] | None
    """The config's dims to give the model's output (reshape or scalar), else ``None``."""


class OnnxRuntimeInstance(ModelInstance):
    """One session; runs each batch as one ``session.run``."""

    def __init__(self, context: InstanceContext, model: OnnxRuntimeModel) -> None:
        super().__init__(context)
        self.model = model
        self.session: Any = None
        self.run_options: ort.RunOptions | None = None
        self.batching = False
        self.scalar_inputs: frozenset[str] = frozenset()
        self.outputs: list[_OutputPlan] = []
        self.string_outputs: frozenset[str] = frozenset()

    def initialize(self) -> None:
        ctx, model = self.context, self.model
        config = ctx.model.config
        assert model.path is not None, "the model initializes before its instances"
        self.session = open_session(
            model.path,
            model.settings,
            model=config.name,
            instance=ctx.name,
            kind=ctx.kind,
            device_id=ctx.device_id,
            log_lock=model.backend.log_lock,
        )
        signature = session_signature(self.session)
        check_config(config, signature, RULES)
        self.run_options = model.settings.run_options()
        self.batching = config.max_batch_size > 0
        self.scalar_inputs = frozenset(t.name for t in signature.inputs if t.dims == ())
        self.outputs = [
            _OutputPlan(o.name, output_reshape(o, signature.find("output", o.name)))
            for o in config.output
        ]
        # Implicit state outputs are fetched like declared ones: the sequence batcher carries
        # them to the next request of the sequence (and hides the undeclared ones).
        states = config.sequence_batching.state if config.sequence_batching else []
        declared = {o.name for o in config.output}
        self.outputs += [
            _OutputPlan(s.output_name, None) for s in states if s.output_name not in declared
        ]
        self.string_outputs = frozenset(
            [o.name for o in config.output if o.data_type.name == "TYPE_STRING"]
            + [s.output_name for s in states if s.data_type.name == "TYPE_STRING"]
        )
        ctx.logger.info(
            "instance '%s' of model '%s' runs on %s",
            ctx.name,
            config.name,
            self.session.get_providers()[0],
        )

    def finalize(self) -> None:
        self.session = None  # ONNX Runtime frees the session's memory with its last reference

    def execute(self, requests: Sequence[InferenceRequest]) -> None:
        """Run the batch; a model without batching runs its requests one by one."""
        run_groups(requests, batching=self.batching, run=self._run, context=self.context)

    def _run(self, group: list[InferenceRequest]) -> tuple[int, int, int]:
        start = time.monotonic_ns()
        feeds = self._feeds(group)
        wanted = self._wanted(group)
        names = [o.name for o in self.outputs if o.name in wanted]
        computed = time.monotonic_ns()
        try:
            results = self.session.run(names, feeds, self.run_options)
        except Exception as exc:
            raise _as_kernel_error(exc) from exc
        ran = time.monotonic_ns()
        self._respond(group, names, results)
        return computed - start, ran - computed, time.monotonic_ns() - ran

    def _feeds(self, group: list[InferenceRequest]) -> dict[str, npt.NDArray[Any]]:
        """One array per input: a lone request's own array, else the requests' concatenation."""
        feeds: dict[str, npt.NDArray[Any]] = {}
        for name in group[0].inputs:
            array = gather(group, name)
            if array.dtype.kind == "O":
                array = bytes_to_str(array, name)
            elif name in self.scalar_inputs and array.size == 1:
                array = array.reshape(())  # the config carries a scalar as [1]
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)  # contiguous arrays go to ORT uncopied
            feeds[name] = array
        return feeds

    def _wanted(self, group: list[InferenceRequest]) -> set[str]:
        wanted: set[str] = set()
        for request in group:
            if not request.requested_output_names:
                return {o.name for o in self.outputs}
            wanted.update(request.requested_output_names)
        return wanted

    def _respond(self, group: list[InferenceRequest], names: list[str], results: list[Any]) -> None:
        total = sum(r.batch_size for r in group) if self.batching else 1
        plans = {o.name: o for o in self.outputs}
        arrays: dict[str, npt.NDArray[Any]] = {}
        for name, value in zip(names, results, strict=True):
            array = np.asarray(value)
            if name in self.string_outputs:
                array = str_to_bytes(array)
            dims = plans[name].dims
            if self.batching and (array.ndim == 0 or array.shape[0] != total):
                raise KernelError(
                    Status.INTERNAL,
                    f"output '{name}' of model '{self.context.model.name}' has shape"
                    f" {format_shape(array.shape)}, whose first dimension is not the batch"
                    f" size {total}",
                )
            if dims is not None:
                array = array.reshape(((total,) if self.batching else ()) + dims)
            arrays[name] = array
        scatter(group, arrays)


def _as_kernel_error(exc: BaseException) -> KernelError:
    # ONNX Runtime's InvalidArgument: a shape or type the model refuses.
    status = Status.INVALID_ARG if type(exc).__name__ == "InvalidArgument" else Status.INTERNAL
    return KernelError(status, f"onnxruntime: {exc}")
