"""Triton's PyTorch backend parameters, read once per model and checked by name.

The keys and defaults are those of Triton's PyTorch backend (``parameters`` of the config, each
a ``string_value``):

* ``INFERENCE_MODE`` (default true): run under ``torch.inference_mode``.
* ``DISABLE_OPTIMIZED_EXECUTION`` (default false): TorchScript's graph executor skips its
  optimization passes (thread-local in torch, so set around each run).
* ``INTRA_OP_THREAD_COUNT``, ``INTER_OP_THREAD_COUNT`` (> 0 applies): torch's thread pools,
  process-wide: the first model that sets one wins (see :class:`ThreadPools`).
* ``ENABLE_WEIGHT_SHARING`` (default false): instances on one device share one loaded model.
* ``ENABLE_CACHE_CLEANING`` (default false): empty the CUDA cache after each run (GPU only).
* ``DISABLE_CUDNN`` (GPU only), ``ENABLE_JIT_EXECUTOR``, ``ENABLE_JIT_PROFILING``,
  ``ENABLE_TENSOR_FUSER`` (TorchScript only; process-wide switches set before each run, as
  Triton does; unset leaves torch's default).

Booleans are ``true``/``false``, ``1``/``0``, ``on``/``off`` (any case). A known key with an
invalid value fails the load with ``INVALID_ARG`` naming it; unknown keys are left alone.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch

from kernel import KernelError, ModelConfig, Status

_TRUE = {"1", "true", "on"}
_FALSE = {"0", "false", "off"}


@dataclass(frozen=True, slots=True)
class TorchSettings:
    """How one model's modules are loaded and run."""

    inference_mode: bool = True
    optimized_execution: bool = True
    cudnn: bool = True
    cache_cleaning: bool = False
    weight_sharing: bool = False
    jit_executor: bool | None = None
    jit_profiling: bool | None = None
    tensor_fuser: bool | None = None
    intra_op_threads: int = 0
    inter_op_threads: int = 0

    def describe(self) -> str:
        """One log line's worth: what runs how."""
        return (
            f"inference mode {_on(self.inference_mode)}, optimized execution"
            f" {_on(self.optimized_execution)}, weight sharing {_on(self.weight_sharing)}"
        )

    def torchscript_only(self) -> list[str]:
        """The parameters set that only a TorchScript module can honour."""
        named = {
            "DISABLE_OPTIMIZED_EXECUTION": not self.optimized_execution,
            "ENABLE_JIT_EXECUTOR": self.jit_executor is not None,
            "ENABLE_JIT_PROFILING": self.jit_profiling is not None,
            "ENABLE_TENSOR_FUSER": self.tensor_fuser is not None,
        }
        return [key for key, given in named.items() if given]

    def gpu_only(self) -> list[str]:
        """The parameters set that only a CUDA instance can honour."""
        named = {"DISABLE_CUDNN": not self.cudnn, "ENABLE_CACHE_CLEANING": self.cache_cleaning}
        return [key for key, given in named.items() if given]

    def apply_jit_switches(self) -> None:
        """Set the process-wide TorchScript switches the config names (before a run)."""
        if self.jit_executor is not None:
            torch._C._jit_set_profiling_executor(self.jit_executor)
        if self.jit_profiling is not None:
            torch._C._jit_set_profiling_mode(self.jit_profiling)
        if self.tensor_fuser is not None:
            torch._C._jit_set_texpr_fuser_enabled(self.tensor_fuser)


def _on(flag: bool) -> str:
    return "on" if flag else "off"


class _Reader:
    """Reads ``parameters`` values, naming the model and key in every error."""

    def __init__(self, config: ModelConfig) -> None:
        self.model = config.name
        self.values = {key: value.string_value for key, value in config.parameters.items()}

    def refuse(self, key: str, value: str, expected: str) -> KernelError:
        return KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{self.model}': parameter '{key}' has the invalid value"
            f" '{value}' (expected {expected})",
        )

    def boolean(self, key: str) -> bool | None:
        value = self.values.get(key)
        if value is None:
            return None
        lowered = value.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise self.refuse(key, value, "true/false, 1/0 or on/off")

    def integer(self, key: str) -> int:
        value = self.values.get(key)
        if value is None:
            return 0
        try:
            return max(int(value.strip()), 0)  # Triton applies only counts > 0
        except ValueError:
            raise self.refuse(key, value, "an integer") from None


def read_settings(config: ModelConfig) -> TorchSettings:
    """The settings a model's ``parameters`` ask for.

    :raises KernelError: ``INVALID_ARG`` naming a parameter whose value is invalid.
    """
    reader = _Reader(config)

    def flag(key: str, default: bool) -> bool:
        value = reader.boolean(key)
        return default if value is None else value

    return TorchSettings(
        inference_mode=flag("INFERENCE_MODE", True),
        optimized_execution=not flag("DISABLE_OPTIMIZED_EXECUTION", False),
        cudnn=not flag("DISABLE_CUDNN", False),
        cache_cleaning=flag("ENABLE_CACHE_CLEANING", False),
        weight_sharing=flag("ENABLE_WEIGHT_SHARING", False),
        jit_executor=reader.boolean("ENABLE_JIT_EXECUTOR"),
        jit_profiling=reader.boolean("ENABLE_JIT_PROFILING"),
        tensor_fuser=reader.boolean("ENABLE_TENSOR_FUSER"),
        intra_op_threads=reader.integer("INTRA_OP_THREAD_COUNT"),
        inter_op_threads=reader.integer("INTER_OP_THREAD_COUNT"),
    )


class ThreadPools:
    """torch's two CPU thread pools, which are process-wide: the first model to size one wins.

    A later model asking for another size is told so in the log and served with the pools as
    they are, as Triton does. torch fixes the inter-op pool's size once any inter-op work has
    run; asking after that is logged the same way.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._intra: tuple[int, str] | None = None
        self._inter: tuple[int, str] | None = None

    def apply(self, model: str, settings: TorchSettings, logger: logging.Logger) -> None:
        """Size the pools as ``model`` asks, unless an earlier model sized them already."""
        with self._lock:
            if settings.intra_op_threads:
                if self._intra is None:
                    torch.set_num_threads(settings.intra_op_threads)
                    self._intra = (settings.intra_op_threads, model)
                    logger.info(
                        "intra-op thread count is %d (INTRA_OP_THREAD_COUNT of model '%s')",
                        torch.get_num_threads(),
                        model,
                    )
                else:
                    _keep(logger, "INTRA_OP_THREAD_COUNT", model, settings.intra_op_threads,
                          self._intra)  # fmt: skip
            if settings.inter_op_threads:
                if self._inter is None:
                    self._inter = (self._set_inter(model, settings.inter_op_threads, logger), model)
                else:
                    _keep(logger, "INTER_OP_THREAD_COUNT", model, settings.inter_op_threads,
                          self._inter)  # fmt: skip

    @staticmethod
    def _set_inter(model: str, count: int, logger: logging.Logger) -> int:
        if torch.get_num_interop_threads() != count:
            try:
                torch.set_num_interop_threads(count)
            except RuntimeError:
                logger.warning(
                    "INTER_OP_THREAD_COUNT %d of model '%s' cannot apply: torch fixed its"
                    " inter-op thread count at %d when inter-op work first ran in this process",
                    count,
                    model,
                    torch.get_num_interop_threads(),
                )
                return torch.get_num_interop_threads()
        logger.info("inter-op thread count is %d (model '%s')", count, model)
        return count


def _keep(
    logger: logging.Logger, key: str, model: str, asked: int, current: tuple[int, str]
) -> None:
    if asked != current[0]:
        logger.warning(
            "%s %d of model '%s' is ignored: torch's thread pools are process-wide and model"
            " '%s' set %d first",
            key,
            asked,
            model,
            current[1],
            current[0],
        )
