"""KIND_GPU: CUDA (and TensorRT) when usable, otherwise a clear load error and no log noise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
from tritonclient.utils import InferenceServerException

from kernel import KernelError, ModelConfig, ModelControlMode, Status
from kernel.config import (
    ModelOptimizationPolicy,
    ModelOptimizationPolicyExecutionAccelerators,
    ModelOptimizationPolicyExecutionAcceleratorsAccelerator,
)


def test_kind_gpu_model_fails_its_load_clearly_without_a_gpu(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    """On a machine without a usable GPU (this one), the load fails naming KIND_GPU."""
    config = kit.add_sub_config(extra="instance_group [ { kind: KIND_GPU } ]")
    kit.write_onnx(repo, "on_gpu", kit.add_sub_model(), config)
    served = serve(repo, model_control_mode=ModelControlMode.EXPLICIT)
    client = served.client(protocol)
    try:
        client.load_model("on_gpu")
    except InferenceServerException as exc:
        assert "KIND_GPU" in str(exc)
    else:
        assert client.is_model_ready("on_gpu")  # a real GPU serves it
    finally:
        client.close()


def _gpu_config(tensorrt: bool) -> ModelConfig:
    config = ModelConfig(name="add_sub")
    if tensorrt:
        config.optimization = ModelOptimizationPolicy(
            execution_accelerators=ModelOptimizationPolicyExecutionAccelerators(
                gpu_execution_accelerator=[
                    ModelOptimizationPolicyExecutionAcceleratorsAccelerator(name="tensorrt")
                ]
            )
        )
    return config


@pytest.mark.parametrize("tensorrt", [False, True])
def test_plugin_decides_from_the_created_session(
    kit: Any,
    tmp_path: Path,
    tensorrt: bool,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Past the kernel's driver check, the session's own providers decide; ORT stays quiet."""

    def not_this(*args: Any) -> Any:
        raise AssertionError("available providers say nothing about this machine")

    monkeypatch.setattr(ort, "get_available_providers", not_this)
    wanted = "TensorrtExecutionProvider" if tensorrt else "CUDAExecutionProvider"
    try:
        instance = kit.unit_instance(
            tmp_path / "m", kit.add_sub_model(), _gpu_config(tensorrt), kind="KIND_GPU"
        )
    except KernelError as exc:
        assert exc.status is Status.UNAVAILABLE
        assert "KIND_GPU" in exc.message and wanted in exc.message
    else:
        assert wanted in instance.session.get_providers()
    captured = capfd.readouterr()
    assert "[E:onnxruntime" not in captured.err and "[W:onnxruntime" not in captured.err
