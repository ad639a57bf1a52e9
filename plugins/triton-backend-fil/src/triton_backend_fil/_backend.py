"""The ``fil`` backend: the kernel's Backend, Model and ModelInstance for tree models.

Each instance reads the model file into its own predictor, as Triton's FIL backend loads one
forest per instance. ``execute`` is a plain ``def``: the kernel runs it in a worker thread and
the frameworks predict in native code without the GIL, on ``cpu_nthread`` threads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from kernel import (
    Backend,
    BackendAttributes,
    BackendContext,
    InferenceRequest,
    InstanceContext,
    KernelError,
    Model,
    ModelContext,
    ModelInstance,
    Status,
)
from kernel.batching import gather, run_groups, scatter
from triton_backend_fil._outputs import output_columns, shape_output
from triton_backend_fil._predictors import Predictor, load_predictor, model_path, reason
from triton_backend_fil._settings import FilSettings, read_settings
from triton_backend_fil._signature import ForestSignature, Tensors, check_config

__all__ = ["FilBackend", "FilInstance", "FilModel"]

_LIBRARIES = ("xgboost", "lightgbm", "treelite")


class FilBackend(Backend):
    """Serves ``backend: "fil"`` models: XGBoost, LightGBM and Treelite checkpoints."""

    attributes: ClassVar[BackendAttributes] = BackendAttributes(
        parallel_instance_loading=True, preferred_instance_kind="KIND_CPU"
    )

    def initialize(self, context: BackendContext) -> None:
        # Versions from the package metadata: the frameworks are imported only by the models
        # that need them.
        found = []
        for name in _LIBRARIES:
            try:
                found.append(f"{name} {version(name)}")
            except PackageNotFoundError:
                found.append(f"{name} missing")
        context.logger.info("fil backend on the CPU: %s", ", ".join(found))

    def create_model(self, context: ModelContext) -> FilModel:
        return FilModel(context)


class FilModel(Model):
    """One version of a tree model: its FIL parameters and its file."""

    def __init__(self, context: ModelContext) -> None:
        super().__init__(context)
        self.settings = FilSettings()
        self.path: Path | None = None

    def initialize(self) -> None:
        self.settings = read_settings(self.context.config, self.context.path)
        self.path = model_path(self.context, self.settings)
        if self.settings.ignored:
            self.context.logger.info(
                "model '%s': parameters %s only tune FIL's GPU execution; ignored on the CPU",
                self.context.name,
                ", ".join(self.settings.ignored),
            )

    def create_instance(self, context: InstanceContext) -> FilInstance:
        return FilInstance(context, self)


class FilInstance(ModelInstance):
    """One predictor; runs each batch as one prediction."""

    def __init__(self, context: InstanceContext, model: FilModel) -> None:
        super().__init__(context)
        self.model = model
        self.predictor: Predictor | None = None
        self.tensors = Tensors(input="input__0", output="output__0")
        self.features = 0
        self.batching = False

    def initialize(self) -> None:
        ctx, model = self.context, self.model
        config = ctx.model.config
        assert model.path is not None, "the model initializes before its instances"
        if ctx.kind == "KIND_GPU":
            raise KernelError(
                Status.UNAVAILABLE,
                f"unable to load model '{config.name}': instance '{ctx.name}' is KIND_GPU, but"
                " this FIL backend predicts on the CPU only; use KIND_CPU (or KIND_AUTO)",
            )
        predictor = load_predictor(model.path, model.settings, config.name)
        # One all-zero row tells how many score columns the model gives (1, or one per class).
        probe = predictor.predict(np.zeros((1, predictor.num_feature), np.float32))
        signature = ForestSignature(
            features=predictor.num_feature,
            columns=output_columns(probe.shape[1], model.settings),
        )
        self.tensors = check_config(config, signature, model.path, model.settings)
        self.predictor = predictor
        self.features = predictor.num_feature
        self.batching = config.max_batch_size > 0
        ctx.logger.info(
            "instance '%s' of model '%s' predicts with %s (%d features, model_type '%s')",
            ctx.name,
            config.name,
            predictor.library,
            predictor.num_feature,
            model.settings.model_type,
        )

    def finalize(self) -> None:
        self.predictor = None

    def execute(self, requests: Sequence[InferenceRequest]) -> None:
        """Predict the batch at once; a model without batching runs its requests one by one."""
        run_groups(requests, batching=self.batching, run=self._run, context=self.context)

    def _run(self, group: list[InferenceRequest]) -> tuple[int, int, int]:
        assert self.predictor is not None, "execute runs between initialize and finalize"
        start = time.monotonic_ns()
        features = self._features(group)
        gathered = time.monotonic_ns()
        try:
            scores = self.predictor.predict(features)
        except Exception as exc:
            raise KernelError(Status.INTERNAL, f"{self.predictor.library}: {reason(exc)}") from exc
        predicted = time.monotonic_ns()
        output = shape_output(scores, self.model.settings)
        scatter(group, {self.tensors.output: output})
        return gathered - start, predicted - gathered, time.monotonic_ns() - predicted

    def _features(self, group: list[InferenceRequest]) -> npt.NDArray[np.float32]:
        """The batch as one rows x features FP32 array: a lone request's own array, else the
        requests' concatenation."""
        name = self.tensors.input
        array = gather(group, name)
        if array.ndim != 2 or array.shape[1] != self.features:
            raise KernelError(
                Status.INVALID_ARG,
                f"input '{name}' has shape {list(array.shape)}, but model"
                f" '{self.context.model.name}' takes [rows, {self.features}]",
            )
        # A no-op for the FP32, C-contiguous arrays the frontends decode: those go uncopied.
        return np.ascontiguousarray(array, dtype=np.float32)
