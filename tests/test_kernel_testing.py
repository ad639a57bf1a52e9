"""``kernel.testing``, the helpers plugin authors test with: its public surface, a cheap import,
models and instances made without a server, and the real tritonclient over both protocols."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

import kernel.testing
from kernel import (
    InferenceRequest,
    InstanceContext,
    KernelError,
    Model,
    ModelConfig,
    ModelInstance,
    Status,
)
from kernel.testing import clients
from kernel.testing.clients import PROTOCOLS, serving


def test_public_surface() -> None:
    assert sorted(kernel.testing.__all__) == [
        "RunningServer",
        "ServerThread",
        "final_response",
        "model_context",
        "run_instance",
        "run_server",
        "serve_command_line",
        "simulated_gpus",
        "test_options",
        "unit_instance",
        "unit_model",
        "unit_request",
        "write_model",
    ]
    assert sorted(clients.__all__) == ["PROTOCOLS", "TritonClients", "infer_inputs", "serving"]
    for module in (kernel.testing, clients):
        for name in module.__all__:
            assert hasattr(module, name), name


def test_importing_kernel_testing_does_not_import_tritonclient() -> None:
    code = (
        "import sys, kernel.testing, kernel.testing.pytest_plugin\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'tritonclient')\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class Scale(Model):
    """Multiplies INPUT0 by the number in ``<version>/factor.txt``; its hooks are async."""

    factor = 0.0

    async def auto_complete_config(self, config: ModelConfig) -> ModelConfig:
        config.max_batch_size = config.max_batch_size or 4
        return config

    async def initialize(self) -> None:
        self.factor = float((self.context.path / "factor.txt").read_text())

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        return ScaleInstance(context, self.factor)


class ScaleInstance(ModelInstance):
    def __init__(self, context: InstanceContext, factor: float) -> None:
        super().__init__(context)
        self.factor = factor
        self.initialized = False

    def initialize(self) -> None:
        self.initialized = True

    def execute(self, requests: Sequence[InferenceRequest]) -> None:
        for request in requests:
            x = request.inputs["INPUT0"]
            if x.size == 0:
                request.respond(error=KernelError(Status.INVALID_ARG, "no rows"))
            else:
                request.respond({"OUTPUT0": x * self.factor})


def test_unit_model_and_instance_are_made_as_the_kernel_makes_them(tmp_path: Path) -> None:
    folder = tmp_path / "scale"
    config = ModelConfig(name="scale")
    model = kernel.testing.unit_model(Scale, folder, config, files={"1/factor.txt": b"2.5"})
    assert model.context.path == folder / "1" and model.context.model_dir == folder
    assert model.context.version == 1 and model.context.backend_config == {}
    assert model.context.config.max_batch_size == 4  # the async auto-complete ran
    assert model.factor == 2.5  # initialize ran after the file was written

    instance = kernel.testing.unit_instance(model, kind="KIND_GPU", index=2)
    assert isinstance(instance, ScaleInstance) and instance.initialized
    assert (instance.context.name, instance.context.kind) == ("scale_2", "KIND_GPU")
    assert instance.context.logger.name == f"{model.context.logger.name}.instance"

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = kernel.testing.run_instance(instance, {"INPUT0": x}, rows=2)
    np.testing.assert_array_equal(got["OUTPUT0"], x * 2.5)
    with pytest.raises(KernelError, match="no rows"):
        kernel.testing.run_instance(instance, {"INPUT0": np.zeros((0, 3), np.float32)})

    request = kernel.testing.unit_request({"INPUT0": x}, rows=2, outputs=("OUTPUT0",))
    assert request.batch_size == 2 and list(request.requested_output_names) == ["OUTPUT0"]
    instance.execute([request])
    assert kernel.testing.final_response(request).final


def test_unit_model_without_auto_complete(tmp_path: Path) -> None:
    config = ModelConfig(name="scale")
    model = kernel.testing.unit_model(
        Scale, tmp_path / "scale", config, files={"1/factor.txt": b"1"}, auto_complete=False
    )
    assert model.context.config.max_batch_size == 0


def test_clients_over_both_protocols(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str], repeat_config: str
) -> None:
    add_model(repo, "addsub", kt_config("addsub"))
    add_model(repo, "repeat", repeat_config)
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    with serving() as serve:
        served = serve(repo)
        assert served.repository == repo
        assert served.server.is_model_ready("addsub")
        for protocol in PROTOCOLS:
            got = served.infer(protocol, "addsub", {"INPUT0": a, "INPUT1": a})
            assert sorted(got) == ["OUTPUT0", "OUTPUT1"]
            np.testing.assert_array_equal(got["OUTPUT0"], 2 * a)
            only = served.infer(protocol, "addsub", {"INPUT0": a, "INPUT1": a}, ["OUTPUT1"])
            assert list(only) == ["OUTPUT1"]
            assert served.config(protocol, "addsub")["max_batch_size"] == 8
        results = served.stream("repeat", {"IN": np.array([4, 5], np.int32)})
    outputs = [r.as_numpy("OUT") for r in results[:-1]]
    assert [o.tolist() for o in outputs] == [[4], [5]]
    with pytest.raises(ValueError, match="protocol"):
        served.client("websocket")
