"""Triton's onnxruntime model-config knobs, read once per model and checked by name.

The names and meanings are those of Triton's onnxruntime backend (its README and source):

* ``parameters``: ``intra_op_thread_count``, ``inter_op_thread_count`` (0 = ONNX Runtime's
  default), ``execution_mode`` (0 sequential, 1 parallel), ``enable_mem_arena``,
  ``enable_mem_pattern`` (booleans: 1/0, true/false, on/off),
  ``memory.enable_memory_arena_shrinkage`` (a run option such as ``cpu:0;gpu:0``),
  ``session.use_device_allocator_for_initializers`` (0/1), and the CUDA provider's
  ``cudnn_conv_algo_search`` (0-2), ``gpu_mem_limit``, ``arena_extend_strategy`` (0-1),
  ``do_copy_in_default_stream``.
* ``optimization { graph { level } }``: -1 basic, 0 or unset all, 1 basic plus extended,
  2 none.
* ``optimization { execution_accelerators { gpu_execution_accelerator [ { name: "tensorrt" } ] } }``
  (and ``name: "cuda"``) with their ``parameters``.

A known parameter with a value Triton would refuse fails the load with an ``INVALID_ARG`` error
naming the parameter; parameters this backend does not know are left alone, as Triton does
(other components read the same map).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

from kernel import KernelError, ModelConfig, Status

_TRUE = {"1", "true", "on"}
_FALSE = {"0", "false", "off"}

_GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    0: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
"""Triton's ``optimization.graph.level`` -> ONNX Runtime's level (0 is the unset default)."""

_CUDNN_ALGO_SEARCH = {"0": "EXHAUSTIVE", "1": "HEURISTIC", "2": "DEFAULT"}
_ARENA_EXTEND = {"0": "kNextPowerOfTwo", "1": "kSameAsRequested"}

_TENSORRT_ALIASES = {
    "max_workspace_size_bytes": "trt_max_workspace_size",
    "int8_calibration_table_name": "trt_int8_calibration_table_name",
    "int8_use_native_calibration_table": "trt_int8_use_native_calibration_table",
}
_PRECISION_MODES = {"FP32": None, "FP16": "trt_fp16_enable", "BF16": "trt_bf16_enable",
                    "INT8": "trt_int8_enable"}  # fmt: skip

_SHRINKAGE = re.compile(r"^(cpu|gpu):\d+(;(cpu|gpu):\d+)*$")

ARENA_SHRINKAGE_KEY = "memory.enable_memory_arena_shrinkage"
DEVICE_ALLOCATOR_KEY = "session.use_device_allocator_for_initializers"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What one model's sessions are created and run with."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    parallel_execution: bool = False
    graph_level: int = 0
    """Triton's ``optimization.graph.level`` (see ``_GRAPH_LEVELS``)."""
    mem_arena: bool | None = None
    mem_pattern: bool | None = None
    device_allocator_for_initializers: str | None = None
    arena_shrinkage: str | None = None
    cuda_options: dict[str, str] = field(default_factory=dict)
    tensorrt_options: dict[str, str] | None = None
    """``None`` unless the config asks for the TensorRT accelerator."""

    def session_options(self) -> ort.SessionOptions:
        """Fresh ``SessionOptions`` (one per session: ONNX Runtime may keep a reference)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if self.parallel_execution
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.graph_optimization_level = _GRAPH_LEVELS[self.graph_level]
        if self.mem_arena is not None:
            options.enable_cpu_mem_arena = self.mem_arena
        if self.mem_pattern is not None:
            options.enable_mem_pattern = self.mem_pattern
        if self.device_allocator_for_initializers is not None:
            options.add_session_config_entry(
                DEVICE_ALLOCATOR_KEY, self.device_allocator_for_initializers
            )
        return options

    def run_options(self) -> ort.RunOptions | None:
        """Run options for every ``session.run``, or ``None`` when nothing is set."""
        if self.arena_shrinkage is None:
            return None
        options = ort.RunOptions()
        options.add_run_config_entry(ARENA_SHRINKAGE_KEY, self.arena_shrinkage)
        return options

    def providers(self, kind: str, device_id: int) -> list[Any]:
        """The execution providers to ask for, best first (CPU last as ONNX Runtime's fallback)."""
        if kind != "KIND_GPU":
            return ["CPUExecutionProvider"]
        device = {"device_id": str(device_id)}
        providers: list[Any] = []
        if self.tensorrt_options is not None:
            providers.append(("TensorrtExecutionProvider", {**device, **self.tensorrt_options}))
        providers.append(("CUDAExecutionProvider", {**device, **self.cuda_options}))
        providers.append("CPUExecutionProvider")
        return providers


class _Reader:
    """Reads and checks ``parameters`` values, naming the model and key in every error."""

    def __init__(self, config: ModelConfig) -> None:
        self.model = config.name
        self.values = {key: value.string_value for key, value in config.parameters.items()}

    def refuse(self, key: str, value: str, expected: str) -> KernelError:
        return KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{self.model}': parameter '{key}' has the invalid value"
            f" '{value}' (expected {expected})",
        )

    def integer(self, key: str, *, minimum: int = 0) -> int:
        value = self.values.get(key)
        if value is None:
            return 0
        try:
            number = int(value.strip())
        except ValueError:
            raise self.refuse(key, value, f"an integer >= {minimum}") from None
        if number < minimum:
            raise self.refuse(key, value, f"an integer >= {minimum}")
        return number

    def boolean(self, key: str) -> bool | None:
        value = self.values.get(key)
        if value is None:
            return None
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise self.refuse(key, value, "1/0, true/false or on/off")

    def choice(self, key: str, choices: dict[str, str]) -> str | None:
        value = self.values.get(key)
        if value is None:
            return None
        if value.strip() not in choices:
            raise self.refuse(key, value, "one of " + ", ".join(choices))
        return choices[value.strip()]


def read_settings(config: ModelConfig) -> SessionSettings:
    """The session settings a model's config asks for.

    :raises KernelError: ``INVALID_ARG`` naming the parameter or field whose value is invalid,
        or an execution accelerator this backend does not know.
    """
    reader = _Reader(config)
    execution_mode = reader.integer("execution_mode")
    if execution_mode not in (0, 1):
        raise reader.refuse("execution_mode", reader.values["execution_mode"], "0 or 1")
    mem_arena = reader.boolean("enable_mem_arena")
    allocator = reader.boolean(DEVICE_ALLOCATOR_KEY)
    shrinkage = reader.values.get(ARENA_SHRINKAGE_KEY)
    if shrinkage is not None:
        shrinkage = shrinkage.strip()
        if not _SHRINKAGE.match(shrinkage):
            raise reader.refuse(ARENA_SHRINKAGE_KEY, shrinkage, "'cpu:0', 'gpu:0' or 'cpu:0;gpu:0'")
        if mem_arena is False and "cpu:" in shrinkage:
            # ONNX Runtime would only fail at the first run: there is no CPU arena to shrink.
            raise reader.refuse(
                ARENA_SHRINKAGE_KEY, shrinkage, "no 'cpu:' entry while enable_mem_arena is 0"
            )

    cuda_options: dict[str, str] = {}
    for key, choices in (
        ("cudnn_conv_algo_search", _CUDNN_ALGO_SEARCH),
        ("arena_extend_strategy", _ARENA_EXTEND),
    ):
        chosen = reader.choice(key, choices)
        if chosen is not None:
            cuda_options[key] = chosen
    if "gpu_mem_limit" in reader.values:
        cuda_options["gpu_mem_limit"] = str(reader.integer("gpu_mem_limit", minimum=1))
    copy_in_default = reader.boolean("do_copy_in_default_stream")
    if copy_in_default is not None:
        cuda_options["do_copy_in_default_stream"] = "1" if copy_in_default else "0"

    graph_level = 0
    tensorrt: dict[str, str] | None = None
    optimization = config.optimization
    if optimization is not None:
        if optimization.graph is not None:
            graph_level = optimization.graph.level
            if graph_level not in _GRAPH_LEVELS:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"unable to load model '{config.name}': optimization.graph.level has the"
                    f" invalid value {graph_level} (expected -1, 0, 1 or 2)",
                )
        accelerators = optimization.execution_accelerators
        if accelerators is not None:
            for accelerator in accelerators.gpu_execution_accelerator:
                if accelerator.name == "tensorrt":
                    tensorrt = _tensorrt_options(config.name, dict(accelerator.parameters))
                elif accelerator.name == "cuda":
                    cuda_options.update(accelerator.parameters)
                else:
                    raise _unknown_accelerator(config.name, accelerator.name, "gpu")
            for accelerator in accelerators.cpu_execution_accelerator:
                # Triton's "openvino" needs an ONNX Runtime built with it; onnxruntime-gpu is not.
                raise _unknown_accelerator(config.name, accelerator.name, "cpu")

    return SessionSettings(
        intra_op_threads=reader.integer("intra_op_thread_count"),
        inter_op_threads=reader.integer("inter_op_thread_count"),
        parallel_execution=execution_mode == 1,
        graph_level=graph_level,
        mem_arena=mem_arena,
        mem_pattern=reader.boolean("enable_mem_pattern"),
        device_allocator_for_initializers=None if allocator is None else str(int(allocator)),
        arena_shrinkage=shrinkage,
        cuda_options=cuda_options,
        tensorrt_options=tensorrt,
    )


def _unknown_accelerator(model: str, name: str, where: str) -> KernelError:
    return KernelError(
        Status.INVALID_ARG,
        f"unable to load model '{model}': unknown {where}_execution_accelerator '{name}' is"
        " requested (this backend offers gpu_execution_accelerator 'tensorrt' and 'cuda')",
    )


def _tensorrt_options(model: str, parameters: dict[str, str]) -> dict[str, str]:
    """Triton's TensorRT accelerator parameters as ONNX Runtime provider options."""
    options: dict[str, str] = {}
    for key, value in parameters.items():
        if key == "precision_mode":
            if value not in _PRECISION_MODES:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"unable to load model '{model}': unsupported precision mode '{value}' is"
                    " requested for the tensorrt accelerator (expected FP32, FP16, BF16, INT8)",
                )
            flag = _PRECISION_MODES[value]
            if flag is not None:
                options[flag] = "1"
        elif key in _TENSORRT_ALIASES:
            options[_TENSORRT_ALIASES[key]] = value
        elif key.startswith("trt_"):
            options[key] = value
        else:
            raise KernelError(
                Status.INVALID_ARG,
                f"unable to load model '{model}': unknown parameter '{key}' is provided for the"
                " tensorrt accelerator",
            )
    return options
