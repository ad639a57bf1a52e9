"""Triton's PyTorch parameters: parsing, process-wide thread pools, weight sharing, the ones that
cannot apply, and KIND_GPU without a GPU."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from triton_backend_torch import PyTorchBackend
from triton_backend_torch._settings import ThreadPools, TorchSettings, read_settings
from tritonclient.utils import InferenceServerException

from kernel import BackendContext, KernelError, ModelConfig, ModelControlMode, Status
from kernel.config import DataType, ModelInput, ModelOutput, ModelParameter


def _config(name: str = "m", **parameters: str) -> ModelConfig:
    tensor = {"data_type": DataType.TYPE_FP32, "dims": [4]}
    return ModelConfig(
        name=name,
        backend="pytorch",
        max_batch_size=8,
        input=[ModelInput(name=f"INPUT__{i}", **tensor) for i in range(2)],
        output=[ModelOutput(name=f"OUTPUT__{i}", **tensor) for i in range(2)],
        parameters={k: ModelParameter(string_value=v) for k, v in parameters.items()},
    )


def test_defaults_are_tritons() -> None:
    assert read_settings(_config()) == TorchSettings(
        inference_mode=True,
        optimized_execution=True,
        cudnn=True,
        cache_cleaning=False,
        weight_sharing=False,
        jit_executor=None,
        jit_profiling=None,
        tensor_fuser=None,
        intra_op_threads=0,
        inter_op_threads=0,
    )


def test_every_parameter_is_read() -> None:
    settings = read_settings(
        _config(
            INFERENCE_MODE="False",
            DISABLE_OPTIMIZED_EXECUTION="1",
            DISABLE_CUDNN="on",
            ENABLE_CACHE_CLEANING="true",
            ENABLE_WEIGHT_SHARING="TRUE",
            ENABLE_JIT_EXECUTOR="false",
            ENABLE_JIT_PROFILING="0",
            ENABLE_TENSOR_FUSER="off",
            INTRA_OP_THREAD_COUNT="3",
            INTER_OP_THREAD_COUNT="-1",
        )
    )
    assert settings == TorchSettings(
        inference_mode=False,
        optimized_execution=False,
        cudnn=False,
        cache_cleaning=True,
        weight_sharing=True,
        jit_executor=False,
        jit_profiling=False,
        tensor_fuser=False,
        intra_op_threads=3,
        inter_op_threads=0,  # Triton applies only counts > 0
    )


@pytest.mark.parametrize(
    ("key", "value"), [("INFERENCE_MODE", "yes please"), ("INTRA_OP_THREAD_COUNT", "four")]
)
def test_invalid_values_fail_the_load_naming_the_parameter(key: str, value: str) -> None:
    with pytest.raises(KernelError) as caught:
        read_settings(_config(**{key: value}))
    assert caught.value.status is Status.INVALID_ARG
    assert f"'{key}'" in caught.value.message and f"'{value}'" in caught.value.message


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """Restores torch's process-wide intra-op thread count after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("torch_threads")
def test_thread_pools_are_sized_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    pools, logger = ThreadPools(), logging.getLogger("test.torch.threads")
    interop = torch.get_num_interop_threads()
    with caplog.at_level(logging.INFO, logger="test.torch.threads"):
        pools.apply("first", TorchSettings(intra_op_threads=1, inter_op_threads=interop), logger)
        pools.apply("second", TorchSettings(intra_op_threads=2, inter_op_threads=interop), logger)
        pools.apply("third", TorchSettings(inter_op_threads=interop + 1), logger)
    assert torch.get_num_threads() == 1
    assert torch.get_num_interop_threads() == interop
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "INTRA_OP_THREAD_COUNT 2 of model 'second' is ignored" in warnings[0]
    assert "model 'first' set 1 first" in warnings[0]
    assert f"INTER_OP_THREAD_COUNT {interop + 1} of model 'third' is ignored" in warnings[1]


def test_weight_sharing_loads_one_module_per_device(kit: Any, tmp_path: Path) -> None:
    module = kit.scripted(kit.AddSub())
    shared = kit.unit_model(tmp_path / "a", module, _config(ENABLE_WEIGHT_SHARING="true"))
    first, second = (kit.unit_instance(shared, index=i) for i in range(2))
    assert first.program is second.program
    separate = kit.unit_model(tmp_path / "b", module, _config())
    first, second = (kit.unit_instance(separate, index=i) for i in range(2))
    assert first.program is not second.program


def test_parameters_that_cannot_apply_are_logged(
    kit: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    program = kit.exported(kit.AddSub(), torch.zeros(2, 4), torch.zeros(2, 4))
    config = _config(
        DISABLE_CUDNN="true", ENABLE_CACHE_CLEANING="true", ENABLE_JIT_PROFILING="false"
    )
    with caplog.at_level(logging.INFO):
        kit.unit_instance(kit.unit_model(tmp_path / "m", program, config))
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "DISABLE_CUDNN and ENABLE_CACHE_CLEANING of model 'm' cannot apply to instance 'm_0'" in m
        for m in messages
    )
    assert any(
        "ENABLE_JIT_PROFILING of model 'm'" in m and "not TorchScript" in m for m in messages
    )


def test_kind_gpu_without_cuda_fails_the_instance_clearly(kit: Any, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    model = kit.unit_model(tmp_path / "m", kit.scripted(kit.AddSub()), _config())
    with pytest.raises(KernelError) as caught:
        kit.unit_instance(model, kind="KIND_GPU")
    assert caught.value.status is Status.UNAVAILABLE
    assert "KIND_GPU" in caught.value.message and "CUDA" in caught.value.message


def test_kind_gpu_model_fails_its_load_over_the_protocol(
    kit: Any, repo: Path, serve: Any, protocol: str
) -> None:
    config = kit.ADD_SUB_CONFIG + "instance_group [ { kind: KIND_GPU } ]"
    kit.write_torch(repo, "on_gpu", kit.scripted(kit.AddSub()), config)
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


def test_backend_config_default_max_batch_size_is_checked() -> None:
    context = BackendContext("pytorch", {"default-max-batch-size": "x"}, logging.getLogger())
    with pytest.raises(KernelError, match="default-max-batch-size"):
        PyTorchBackend().initialize(context)
