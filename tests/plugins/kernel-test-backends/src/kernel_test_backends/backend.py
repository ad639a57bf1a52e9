"""Test backends: one model class whose behaviour a config parameter selects.

Parameters (``parameters { key: "behaviour" value { string_value: "addsub" } }``):

* ``behaviour`` (``execute`` is a plain ``def``: it runs on the instance's thread): ``addsub``
  (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1), ``identity`` (OUTPUTi = INPUTi),
  ``repeat`` (decoupled: one response
  per element of IN on OUT, sent from another thread, then the final flag), ``raise``,
  ``no_answer``, ``answer_twice``, ``sleep`` (identity after ``sleep_ms``), ``timed`` (``sleep``
  reporting a 1 / 2 / 3 us time split), ``overlap`` (an ``async def execute`` allowing
  ``overlapping_batches`` calls at once; OUTPUT1 = the most that ran at once so far).
* Batch behaviours, for the schedulers' tests (each request may set a ``sleep_ms`` parameter;
  the batch sleeps the longest): ``echo_id`` concatenates INPUT0 over the batch as a batching
  backend does, answers each request its own rows as OUTPUT0 and, per row, ECHO: JSON with the
  request's id, correlation id and priority, the batch's rows and request ids, and the instance.
  ``sequence_accumulate`` answers OUTPUT = ACC_OUT = ACC_IN + INPUT (ACC is the implicit
  state) and ECHO: JSON with the control inputs it got (START, END, READY, CORRID), the batch's
  correlation ids and the instance.
* ``init_sleep_ms``: each instance's initialize sleeps this long (blocking, in its thread).
* ``fail_instance_init``: instance initialize raises.
* ``fail_instance_init_times``: the first N instance initializations in this process of the
  model whose ``init_token`` parameter has this value raise (load retries).
* ``memory_usage``: ``TYPE:ID:BYTES`` entries joined by ``;`` the model reports as its memory
  usage (``raise``: reporting it raises).
* ``log_execute``: each ``execute`` appends ``execute <instance> <json>`` to the lifecycle log,
  the JSON listing each request's id and inputs (as lists), for the warmup tests.

Auto-complete: a version folder holding ``io.json`` (``{"max_batch_size": 8, "behaviour": ...,
"inputs": [[name, "TYPE_FP32", [dims]]], "outputs": [...]}``) completes a missing config.

Lifecycle events are appended to the file named by ``--backend-config=<backend>,lifecycle_log=...``
so tests can check their order.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
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
    MemoryUsage,
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
        from kernel.config import DataType, ModelInput, ModelOutput, ModelParameter

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

    async def memory_usage(self) -> list[MemoryUsage] | None:
        text = self.context.parameter("memory_usage")
        if text == "raise":
            raise RuntimeError("memory usage unknown")
        if not text:
            return None
        entries = [item.split(":") for item in text.split(";")]
        return [MemoryUsage(kind, int(index), int(size)) for kind, index, size in entries]

    def finalize(self) -> None:
        self.log(f"model.finalize {self.context.name} {self.context.version}")


_INIT_FAILURES: dict[str, int] = {}
"""Instance initializations failed so far, by ``init_token`` (``fail_instance_init_times``)."""


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
        times = int(model.parameter("fail_instance_init_times", "0") or 0)
        token = model.parameter("init_token", "") or ""
        if _INIT_FAILURES.get(token, 0) < times:
            _INIT_FAILURES[token] = _INIT_FAILURES.get(token, 0) + 1
            raise RuntimeError(f"instance {self.context.name} fails init {_INIT_FAILURES[token]}")
        if self.behaviour == "overlap":
            self.overlapping_batches = int(model.parameter("overlapping_batches", "1") or 1)
            self.running = self.most_running = 0
            self.execute = self._overlap  # type: ignore[method-assign]
        if self.behaviour == "submit":
            self.overlapping_batches = int(model.parameter("overlapping_batches", "1") or 1)
            self.running = self.most_running = 0
            self.execute = self._overlap  # type: ignore[method-assign]
            self.submit = self._submit  # type: ignore[method-assign]
        self.log(f"instance.initialize {self.context.name} {self.context.kind}")

    def finalize(self) -> None:
        self.log(f"instance.finalize {self.context.name}")

    def execute(self, requests: Sequence[InferenceRequest]) -> None:
        if self.context.model.parameter("log_execute"):
            seen = [
                {
                    "id": r.id,
                    "inputs": {
                        k: [
                            x.decode() if isinstance(x, bytes) else x
                            for x in v.reshape(-1).tolist()
                        ]
                        for k, v in r.inputs.items()
                    },
                    "shapes": {k: list(v.shape) for k, v in r.inputs.items()},
                }
                for r in requests
            ]
            self.log(f"execute {self.context.name} {json.dumps(seen)}")
        batch_behaviour = getattr(self, f"_batch_{self.behaviour}", None)
        if batch_behaviour is not None:
            delay = max(float(r.parameters.get("sleep_ms", 0)) for r in requests)
            if delay:
                time.sleep(delay / 1000)
            batch_behaviour(requests)
            return
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

    async def _overlap(self, requests: Sequence[InferenceRequest]) -> None:
        """``async def execute``: identity after ``sleep_ms`` on the loop; OUTPUT1 tells how
        many calls of it ran at once at most so far."""
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.sleep_ms / 1000)
        finally:
            self.running -= 1
        for request in requests:
            a = request.inputs["INPUT0"]
            request.respond({"OUTPUT0": a, "OUTPUT1": np.full_like(a, self.most_running)})

    def _submit(
        self,
        requests: Sequence[InferenceRequest],
        done: Callable[[BaseException | None], None],
    ) -> None:
        """``ModelInstance.submit``: the ``overlap`` behaviour without a task, answered from a
        timer callback after ``sleep_ms``."""
        self.running += 1
        self.most_running = max(self.most_running, self.running)

        def answer() -> None:
            self.running -= 1
            for request in requests:
                a = request.inputs["INPUT0"]
                if not request.answered:
                    request.respond({"OUTPUT0": a, "OUTPUT1": np.full_like(a, self.most_running)})
            done(None)

        asyncio.get_running_loop().call_later(self.sleep_ms / 1000, answer)

    def _timed(self, request: InferenceRequest) -> None:
        """``sleep``, reporting a fixed time split (1 / 2 / 3 us) for the batch first."""
        self.context.report_times(1_000, 2_000, 3_000)
        self._sleep(request)

    def _echo(self, info: dict[str, Any], rows: int) -> np.ndarray:
        shape = (rows, 1) if self.context.model.config.max_batch_size > 0 else (1,)
        return np.full(shape, json.dumps(info).encode(), dtype=object)

    def _batch_echo_id(self, requests: Sequence[InferenceRequest]) -> None:
        ragged = {t.name for t in self.context.model.config.input if t.allow_ragged_batch}
        arrays = [np.asarray(r.inputs["INPUT0"]) for r in requests]
        if "INPUT0" in ragged:
            arrays = [a.reshape(len(a), -1) for a in arrays]
            widths = [a.shape[1] for a in arrays]
            width = max(widths)
            arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays]
        else:
            widths = []
        batch = np.concatenate(arrays)  # fails, as a real backend would, on mixed shapes
        total = sum(r.batch_size for r in requests)
        ids = [r.id for r in requests]
        offset = 0
        for index, request in enumerate(requests):
            rows = request.batch_size if self.context.model.config.max_batch_size > 0 else 1
            own = batch[offset : offset + rows]
            if widths:
                own = own[:, : widths[index]]
            offset += rows
            info = {
                "id": request.id,
                "corrid": request.correlation_id,
                "priority": request.priority,
                "batch_rows": total,
                "batch_ids": ids,
                "instance": self.context.name,
            }
            request.respond({"OUTPUT0": own, "ECHO": self._echo(info, rows)})

    def _batch_sequence_accumulate(self, requests: Sequence[InferenceRequest]) -> None:
        def value(request: InferenceRequest, name: str) -> Any:
            found = request.inputs.get(name)
            if found is None:
                return None
            item = np.asarray(found).reshape(-1)[0]
            return item.decode() if isinstance(item, bytes) else item.item()

        peers = [value(r, "CORRID") for r in requests]
        for request in requests:
            total = np.asarray(request.inputs["ACC_IN"]) + np.asarray(request.inputs["INPUT"])
            info = {
                name.lower(): value(request, name) for name in ("START", "END", "READY", "CORRID")
            }
            info.update(batch_corrids=peers, instance=self.context.name)
            request.respond({"OUTPUT": total, "ACC_OUT": total, "ECHO": self._echo(info, 1)})

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
