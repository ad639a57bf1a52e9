"""Test backends: one model class whose behaviour a config parameter selects.

Parameters (``parameters { key: "behaviour" value { string_value: "addsub" } }``):

* ``behaviour``: ``addsub`` (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, in a worker
  thread), ``identity`` (OUTPUTi = INPUTi, on the event loop), ``repeat`` (decoupled: one response
  per element of IN on OUT, sent from another thread, then the final flag), ``raise``,
  ``no_answer``, ``answer_twice``, ``sleep`` (identity after ``sleep_ms``).
* ``init_sleep_ms``: each instance's initialize sleeps this long (blocking, in its thread).
* ``fail_instance_init``: instance initialize raises.

Auto-complete: a version folder holding ``io.json`` (``{"max_batch_size": 8, "behaviour": ...,
"inputs": [[name, "TYPE_FP32", [dims]]], "outputs": [...]}``) completes a missing config.

Lifecycle events are appended to the file named by ``--backend-config=<backend>,lifecycle_log=...``
so tests can check their order.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from kernel import (
    Backend,
    BackendAttributes,
    BackendContext,
    InferenceRequest,
    InferenceResponse,
    InstanceContext,
    KernelError,
    Model,
    ModelConfig,
    ModelContext,
    ModelInstance,
)


class _Log:
    def __init__(self, path: str | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def __call__(self, event: str) -> None:
        if self._path:
            with self._lock, open(self._path, "a") as f:
                f.write(event + "\n")


class TestBackend(Backend):
    """Backend ``kerneltest``: instances load one after another."""

    attributes = BackendAttributes(parallel_instance_loading=False)

    def __init__(self) -> None:
        self.log = _Log(None)

    def initialize(self, context: BackendContext) -> None:
        self.log = _Log(context.config.get("lifecycle_log"))
        self.log(f"backend.initialize {context.name}")

    def create_model(self, context: ModelContext) -> Model:
        return TestModel(context, self.log)

    async def finalize(self) -> None:
        self.log("backend.finalize")


class ParallelTestBackend(TestBackend):
    """Backend ``kerneltest_parallel``: instances load concurrently."""

    attributes = BackendAttributes(parallel_instance_loading=True)


class BrokenInitBackend(TestBackend):
    """Backend ``kerneltest_broken_init``: its initialize raises."""

    def initialize(self, context: BackendContext) -> None:
        raise RuntimeError("kerneltest_broken_init refuses to initialize")


class NotABackend:
    """Registered as a backend but not a ``kernel.Backend`` subclass."""


_DTYPES = {"TYPE_FP32", "TYPE_INT32", "TYPE_STRING", "TYPE_FP64", "TYPE_INT64", "TYPE_BOOL"}


class TestModel(Model):
    def __init__(self, context: ModelContext, log: _Log) -> None:
        super().__init__(context)
        self.log = log

    def auto_complete_config(self, config: ModelConfig) -> ModelConfig:
        io_file = self.context.path / "io.json"
        if config.input or not io_file.is_file():
            return config
        from kernel._proto.inference import DataType, ModelInput, ModelOutput, ModelParameter

        spec: dict[str, Any] = json.loads(io_file.read_text())
        if not config.max_batch_size:
            config.max_batch_size = int(spec.get("max_batch_size", 0))
        config.input = [
            ModelInput(name=n, data_type=DataType[t], dims=list(d)) for n, t, d in spec["inputs"]
        ]
        config.output = [
            ModelOutput(name=n, data_type=DataType[t], dims=list(d)) for n, t, d in spec["outputs"]
        ]
        if "behaviour" in spec and "behaviour" not in config.parameters:
            config.parameters["behaviour"] = ModelParameter(string_value=spec["behaviour"])
        return config

    def initialize(self) -> None:
        self.log(f"model.initialize {self.context.name} {self.context.version}")

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        return TestInstance(context, self.log)

    def finalize(self) -> None:
        self.log(f"model.finalize {self.context.name} {self.context.version}")


class TestInstance(ModelInstance):
    def __init__(self, context: InstanceContext, log: _Log) -> None:
        super().__init__(context)
        self.log = log
        model = context.model
        self.behaviour = model.parameter("behaviour", "identity") or "identity"
        self.sleep_ms = float(model.parameter("sleep_ms", "0") or 0)

    def initialize(self) -> None:
        model = self.context.model
        delay = float(model.parameter("init_sleep_ms", "0") or 0)
        if delay:
            time.sleep(delay / 1000)
        if model.parameter("fail_instance_init"):
            raise RuntimeError(f"instance {self.context.name} refuses to initialize")
        self.log(f"instance.initialize {self.context.name} {self.context.kind}")

    def finalize(self) -> None:
        self.log(f"instance.finalize {self.context.name}")

    def execute(self, requests: Sequence[InferenceRequest]) -> None:
        for request in requests:
            getattr(self, f"_{self.behaviour}")(request)

    def _addsub(self, request: InferenceRequest) -> None:
        a, b = request.inputs["INPUT0"], request.inputs["INPUT1"]
        request.respond({"OUTPUT0": a + b, "OUTPUT1": a - b})

    def _identity(self, request: InferenceRequest) -> None:
        request.respond(
            {name.replace("INPUT", "OUTPUT"): value for name, value in request.inputs.items()},
            parameters=request.parameters,
        )

    def _sleep(self, request: InferenceRequest) -> None:
        time.sleep(self.sleep_ms / 1000)
        self._identity(request)

    def _raise(self, request: InferenceRequest) -> None:
        raise ValueError("kerneltest: asked to raise")

    def _no_answer(self, request: InferenceRequest) -> None:
        return None

    def _answer_twice(self, request: InferenceRequest) -> None:
        self._identity(request)
        try:
            self._identity(request)
        except KernelError as exc:
            self.log(f"second answer refused: {exc.message}")

    def _repeat(self, request: InferenceRequest) -> None:
        sender = request.response_sender()
        values = np.array(request.inputs["IN"]).reshape(-1)

        def send_all() -> None:
            for value in values:
                if self.sleep_ms:
                    time.sleep(self.sleep_ms / 1000)
                sender.send(InferenceResponse(outputs={"OUT": np.array([value], dtype=np.int32)}))
            sender.send(final=True)

        threading.Thread(target=send_all, daemon=True).start()
