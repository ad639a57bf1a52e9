"""The ``pytorch`` backend: the kernel's Backend, Model and ModelInstance for PyTorch models.

One loaded module per instance (or per device with ``ENABLE_WEIGHT_SHARING``), as Triton does.
``execute`` is a plain ``def``: the kernel runs it in a worker thread, and torch releases the
GIL inside its operators, so instances of a model compute in parallel.

Memory usage (the statistics API's ``memory_usage``): the bytes of the storages behind the
loaded modules' parameters and buffers, each storage once (a module shared by weight sharing,
or tensors sharing storage, count once), on their devices (``CPU`` 0 or ``GPU`` n). What the
forward passes allocate while running is not counted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy.typing as npt
import torch
from torch.jit._fuser import optimized_execution  # torch.jit re-exports it untyped

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
    datatype_of,
)
from kernel.batching import gather, run_groups, scatter
from kernel.signature import (
    DEFAULT_MAX_BATCH_SIZE,
    auto_complete,
    format_shape,
    implicit_inputs,
    is_complete,
)
from kernel.tensors import config_type_to_datatype, datatype_to_config_type
from triton_backend_torch._naming import OutputReader, input_positions, output_positions
from triton_backend_torch._openmp import POLICY
from triton_backend_torch._program import TorchProgram, is_exported, load, model_path
from triton_backend_torch._settings import ThreadPools, TorchSettings, read_settings
from triton_backend_torch._signature import check_input_count, check_tensors, program_signature
from triton_backend_torch._tensors import Value, to_numpy, to_torch

__all__ = ["PyTorchBackend", "PyTorchInstance", "PyTorchModel"]


class PyTorchBackend(Backend):
    """Serves ``backend: "pytorch"`` / ``platform: "pytorch_libtorch"`` models.

    Backend config (``--backend-config=pytorch,<key>=<value>``): ``default-max-batch-size``
    (default 4), the ``max_batch_size`` auto-complete gives an exported program that can batch.
    """

    attributes: ClassVar[BackendAttributes] = BackendAttributes(parallel_instance_loading=True)

    def __init__(self) -> None:
        self.default_max_batch_size = DEFAULT_MAX_BATCH_SIZE
        self.thread_pools = ThreadPools()

    def initialize(self, context: BackendContext) -> None:
        self.default_max_batch_size = context.int_setting(
            "default-max-batch-size", self.default_max_batch_size
        )
        context.logger.info(
            "torch %s (CUDA %s)",
            torch.__version__,
            f"{torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else "unusable",
        )
        context.logger.info("torch's intra-op threads: %s", POLICY.reason)

    def create_model(self, context: ModelContext) -> PyTorchModel:
        return PyTorchModel(context, self)


class PyTorchModel(Model):
    """One version of a PyTorch model: its file, its settings, the modules it shares."""

    def __init__(self, context: ModelContext, backend: PyTorchBackend) -> None:
        super().__init__(context)
        self.backend = backend
        self.path: Path | None = None
        self.settings = TorchSettings()
        self._shared: dict[str, TorchProgram] = {}
        self._shared_lock = threading.Lock()
        self.instances: list[PyTorchInstance] = []

    def auto_complete_config(self, config: ModelConfig) -> ModelConfig:
        """Fill missing inputs/outputs and batching from an exported program (``.pt2``)."""
        if is_complete(config):
            return config
        path = model_path(self.context)
        if not is_exported(path):
            self.context.logger.info(
                "skipping auto-complete of model '%s': TorchScript records no tensor types",
                config.name,
            )
            return config
        program = load(path, config.name, torch.device("cpu"))
        return auto_complete(
            config,
            program_signature(program),
            default_max_batch_size=self.backend.default_max_batch_size,
            logger=self.context.logger,
        )

    def initialize(self) -> None:
        context = self.context
        self.settings = read_settings(context.config)
        self.path = model_path(context)
        self.backend.thread_pools.apply(context.name, self.settings, context.logger)
        context.logger.info(
            "model '%s' loads %s: %s", context.name, self.path.name, self.settings.describe()
        )

    def program(self, device: torch.device | None, instance: str) -> TorchProgram:
        """The instance's module: its own, or the device's shared one (weight sharing)."""
        assert self.path is not None, "the model initializes before its instances"
        name = self.context.name
        if not self.settings.weight_sharing:
            return load(self.path, name, device)
        key = "model" if device is None else str(device)
        with self._shared_lock:
            program = self._shared.get(key)
            if program is None:
                program = self._shared[key] = load(self.path, name, device)
            else:
                self.context.logger.info(
                    "instance '%s' reuses the module loaded on %s (ENABLE_WEIGHT_SHARING)",
                    instance,
                    key,
                )
            return program

    def finalize(self) -> None:
        self._shared.clear()

    def create_instance(self, context: InstanceContext) -> PyTorchInstance:
        instance = PyTorchInstance(context, self)
        self.instances.append(instance)
        return instance

    def memory_usage(self) -> list[MemoryUsage]:
        """The storages of the loaded modules' parameters and buffers, each once, per device."""
        seen: set[tuple[str, int, int]] = set()
        devices: Counter[tuple[str, int]] = Counter()
        for instance in self.instances:
            module = instance.program.call if instance.program is not None else None
            if not isinstance(module, torch.nn.Module):
                continue
            for tensor in [*module.parameters(), *module.buffers()]:
                storage = tensor.untyped_storage()
                device = tensor.device
                place = ("GPU", device.index or 0) if device.type == "cuda" else ("CPU", 0)
                key = (*place, storage.data_ptr())
                if storage.nbytes() and key not in seen:
                    seen.add(key)
                    devices[place] += storage.nbytes()
        return [MemoryUsage(kind, index, size) for (kind, index), size in sorted(devices.items())]


@dataclass(frozen=True, slots=True)
class _OutputPlan:
    name: str
    datatype: str
    """The wire datatype the config promises (``FP32``, ``BYTES``...)."""
    dims: tuple[int, ...] | None
    """The config's dims to give the model's output (``reshape``), else ``None``."""


class PyTorchInstance(ModelInstance):
    """One module on one device; runs each batch as one forward call."""

    def __init__(self, context: InstanceContext, model: PyTorchModel) -> None:
        super().__init__(context)
        self.model = model
        self.program: TorchProgram | None = None
        self.device: torch.device | None = None
        self.batching = False
        self.positions: dict[str, int] = {}
        self.reader = OutputReader("", {})
        self.outputs: list[_OutputPlan] = []

    def initialize(self) -> None:
        ctx, model = self.context, self.model
        config = ctx.model.config
        self.device = _device(ctx)
        program = self.program = model.program(self.device, ctx.name)
        implicit = implicit_inputs(config)
        check_input_count(config, program, len(implicit))
        names = [t.name for t in config.input] + implicit
        if program.dict_input:
            self.positions = {name: 0 for name in names}
        else:
            self.positions = input_positions(config.name, names, program.forward_args, ctx.logger)
        # Implicit state outputs follow the declared outputs (Triton's naming rules cover
        # both); they are read on every request, for the sequence batcher to carry.
        declared = {o.name for o in config.output}
        states = [
            s
            for s in (config.sequence_batching.state if config.sequence_batching else [])
            if s.output_name not in declared
        ]
        out_positions = output_positions(
            [o.name for o in config.output] + [s.output_name for s in states]
        )
        check_tensors(config, program, self.positions, out_positions)
        self.reader = OutputReader(config.name, out_positions)
        self.batching = config.max_batch_size > 0
        self.outputs = [
            _OutputPlan(
                o.name,
                config_type_to_datatype(o.data_type.name),
                tuple(o.dims) if o.reshape is not None and list(o.dims).count(-1) <= 1 else None,
            )
            for o in config.output
        ] + [
            _OutputPlan(s.output_name, config_type_to_datatype(s.data_type.name), None)
            for s in states
        ]
        self._log_inapplicable(program)
        ctx.logger.info(
            "instance '%s' of model '%s' runs %s on %s",
            ctx.name,
            config.name,
            "TorchScript" if program.torchscript else "an exported program",
            self.device or "the devices the file names (KIND_MODEL)",
        )

    def _log_inapplicable(self, program: TorchProgram) -> None:
        settings, ctx = self.model.settings, self.context
        if not program.torchscript and settings.torchscript_only():
            ctx.logger.info(
                "%s of model '%s' cannot apply: the model is an exported program, not TorchScript",
                _listing(settings.torchscript_only()),
                ctx.model.name,
            )
        if not self._on_cuda() and settings.gpu_only():
            ctx.logger.info(
                "%s of model '%s' cannot apply to instance '%s': it does not run on a GPU",
                _listing(settings.gpu_only()),
                ctx.model.name,
                ctx.name,
            )

    def _on_cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def finalize(self) -> None:
        self.program = None  # torch frees the module with its last reference

    def execute(self, requests: Sequence[InferenceRequest]) -> None:
        """Run the batch as one forward call; a model without batching runs its requests one
        by one."""
        run_groups(requests, batching=self.batching, run=self._run, context=self.context)

    def _run(self, group: list[InferenceRequest]) -> tuple[int, int, int]:
        assert self.program is not None, "execute runs on initialized instances"
        start = time.monotonic_ns()
        arguments = self._arguments(group)
        wanted = self._wanted(group)
        names = [o.name for o in self.outputs if o.name in wanted]
        computed = time.monotonic_ns()
        try:
            with self._running():
                if self.program.dict_input:
                    result = self.program.call(arguments)
                else:
                    result = self.program.call(*arguments)
                chosen = self.reader.read(result, names)
                if self._on_cuda():
                    torch.cuda.synchronize(self.device)
        except KernelError:
            raise
        except Exception as exc:
            raise _as_kernel_error(exc) from exc
        ran = time.monotonic_ns()
        self._respond(group, names, chosen)
        if self.model.settings.cache_cleaning and self._on_cuda():
            torch.cuda.empty_cache()
        return computed - start, ran - computed, time.monotonic_ns() - ran

    def _running(self) -> ExitStack:
        """The modes a forward runs in: no autograd, and the config's switches."""
        settings = self.model.settings
        assert self.program is not None
        stack = ExitStack()
        # inference_mode turns grad off; its "off" turns grad back on, so no_grad inside it:
        # with INFERENCE_MODE false no autograd is recorded either, and weights that require
        # grad do no harm. Each context costs microseconds per batch: only the ones that
        # change something are entered.
        stack.enter_context(torch.inference_mode(settings.inference_mode))
        if not settings.inference_mode:
            stack.enter_context(torch.no_grad())
        if self.program.torchscript:
            # thread-local; the instance thread runs at torch's default unless told otherwise
            if torch._C._get_graph_executor_optimize() != settings.optimized_execution:
                stack.enter_context(optimized_execution(settings.optimized_execution))
            settings.apply_jit_switches()
        if self._on_cuda():
            stack.enter_context(torch.cuda.device(self.device))
            torch.backends.cudnn.enabled = settings.cudnn  # process-wide, set per run as Triton
        return stack

    def _arguments(self, group: list[InferenceRequest]) -> Any:
        """The forward's arguments: each input a lone request's own memory, else the requests'
        concatenation; positional, or one dict for a dict-taking forward."""
        assert self.program is not None
        program = self.program
        cuda = self._on_cuda()
        values: dict[str, Value] = {}
        for name in group[0].inputs:
            position = self.positions.get(name)
            if position is None:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"model '{self.context.model.name}' has no input '{name}'",
                )
            # A request's own arrays may be read-only wire bytes: the model gets a copy of
            # each input it may write into. A concatenation (several requests) is private.
            copy = len(group) == 1 and not cuda and position in program.written_args
            value = to_torch(gather(group, name), name, copy=copy)
            if cuda and isinstance(value, torch.Tensor):
                value = value.to(self.device)
            values[name] = value
        if program.dict_input:
            return values
        arguments: list[Value | None] = [None] * (max(self.positions.values(), default=-1) + 1)
        for name, value in values.items():
            arguments[self.positions[name]] = value
        while arguments and arguments[-1] is None:
            arguments.pop()  # optional trailing inputs: the forward's defaults
        # By identity: `None in arguments` compares each tensor with None through
        # Tensor.__eq__, about 10 us each.
        gap = next((i for i, value in enumerate(arguments) if value is None), None)
        if gap is not None:
            missing = program.forward_args[gap]
            raise KernelError(
                Status.INVALID_ARG,
                f"no input is given for argument '{missing}' of model '{self.context.model.name}'",
            )
        return arguments

    def _wanted(self, group: list[InferenceRequest]) -> set[str]:
        wanted: set[str] = set()
        for request in group:
            if not request.requested_output_names:
                return {o.name for o in self.outputs}
            wanted.update(request.requested_output_names)
        return wanted

    def _respond(
        self, group: list[InferenceRequest], names: list[str], chosen: dict[str, Any]
    ) -> None:
        total = sum(r.batch_size for r in group) if self.batching else 1
        plans = {o.name: o for o in self.outputs}
        arrays: dict[str, npt.NDArray[Any]] = {}
        for name in names:
            plan = plans[name]
            array = to_numpy(chosen[name], name)
            datatype = datatype_of(array)
            if datatype != plan.datatype:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"configuration expects datatype {datatype_to_config_type(plan.datatype)}"
                    f" for output '{name}', model provides {datatype_to_config_type(datatype)}",
                )
            if self.batching and (array.ndim == 0 or array.shape[0] != total):
                raise KernelError(
                    Status.INTERNAL,
                    f"output '{name}' of model '{self.context.model.name}' has shape"
                    f" {format_shape(array.shape)}, whose first dimension is not the batch"
                    f" size {total}",
                )
            if plan.dims is not None:
                array = array.reshape(((total,) if self.batching else ()) + plan.dims)
            elif array.ndim == 0:
                array = array.reshape(1)  # Triton has no scalars: the config carries one as [1]
            arrays[name] = array
        scatter(group, arrays)


def _device(context: InstanceContext) -> torch.device | None:
    """The instance's torch device; ``None`` for KIND_MODEL (the file's own placement).

    :raises KernelError: ``UNAVAILABLE`` for KIND_GPU without a usable CUDA device.
    """
    if context.kind == "KIND_MODEL":
        return None
    if context.kind != "KIND_GPU":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if context.device_id >= count:
        raise KernelError(
            Status.UNAVAILABLE,
            f"unable to load model '{context.model.name}': instance '{context.name}' is KIND_GPU"
            f" on device {context.device_id}, but torch {torch.__version__} sees"
            f" {count} usable CUDA device(s)"
            + (" (this torch build has no CUDA)" if torch.version.cuda is None else "")
            + "; use KIND_CPU, or a CUDA build of torch on a machine with that GPU",
        )
    return torch.device("cuda", context.device_id)


def _listing(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]


def _as_kernel_error(exc: BaseException) -> KernelError:
    if isinstance(exc, KernelError):
        return exc
    return KernelError(Status.INTERNAL, f"PyTorch execute failure: {exc}")  # Triton's words
