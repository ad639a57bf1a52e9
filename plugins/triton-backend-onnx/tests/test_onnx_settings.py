"""Triton's onnxruntime parameters: read, applied to the session, wrong values refused by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from triton_backend_onnx._settings import read_settings
from tritonclient.utils import InferenceServerException

from kernel import KernelError, ModelConfig, ModelControlMode, Status
from kernel.config import (
    ModelOptimizationPolicy,
    ModelOptimizationPolicyExecutionAccelerators,
    ModelOptimizationPolicyExecutionAcceleratorsAccelerator,
    ModelOptimizationPolicyGraph,
    ModelParameter,
)

Level = ort.GraphOptimizationLevel


def _config(parameters: dict[str, str] | None = None, **fields: Any) -> ModelConfig:
    return ModelConfig(
        name="m",
        parameters={k: ModelParameter(string_value=v) for k, v in (parameters or {}).items()},
        **fields,
    )


def _graph(level: int) -> ModelOptimizationPolicy:
    return ModelOptimizationPolicy(graph=ModelOptimizationPolicyGraph(level=level))


def _gpu_accelerator(name: str, **parameters: str) -> ModelOptimizationPolicy:
    accelerator = ModelOptimizationPolicyExecutionAcceleratorsAccelerator(
        name=name, parameters=parameters
    )
    return ModelOptimizationPolicy(
        execution_accelerators=ModelOptimizationPolicyExecutionAccelerators(
            gpu_execution_accelerator=[accelerator]
        )
    )


def test_parameters_become_session_and_run_options() -> None:
    settings = read_settings(
        _config(
            {
                "intra_op_thread_count": "1",
                "inter_op_thread_count": "2",
                "execution_mode": "1",
                "enable_mem_arena": "on",
                "enable_mem_pattern": "false",
                "memory.enable_memory_arena_shrinkage": "cpu:0",
                "session.use_device_allocator_for_initializers": "1",
                "some_other_component_setting": "left alone",
            }
        )
    )
    options = settings.session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 2
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.enable_cpu_mem_arena is True
    assert options.enable_mem_pattern is False
    assert options.get_session_config_entry("session.use_device_allocator_for_initializers") == "1"
    run_options = settings.run_options()
    assert run_options is not None
    assert run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"


def test_defaults_are_onnxruntime_defaults() -> None:
    settings = read_settings(_config())
    options = settings.session_options()
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == Level.ORT_ENABLE_ALL
    assert settings.run_options() is None
    assert settings.providers("KIND_CPU", 0) == ["CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (-1, Level.ORT_ENABLE_BASIC),
        (0, Level.ORT_ENABLE_ALL),
        (1, Level.ORT_ENABLE_EXTENDED),
        (2, Level.ORT_DISABLE_ALL),
    ],
)
def test_graph_optimization_level_follows_triton(level: int, expected: Any) -> None:
    options = read_settings(_config(optimization=_graph(level))).session_options()
    assert options.graph_optimization_level == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("execution_mode", "2"),
        ("execution_mode", "parallel"),
        ("intra_op_thread_count", "-1"),
        ("inter_op_thread_count", "many"),
        ("enable_mem_arena", "maybe"),
        ("enable_mem_pattern", "2"),
        ("memory.enable_memory_arena_shrinkage", "tpu:0"),
        ("session.use_device_allocator_for_initializers", "yes please"),
        ("cudnn_conv_algo_search", "3"),
        ("arena_extend_strategy", "7"),
    ],
)
def test_invalid_value_is_refused_by_name(key: str, value: str) -> None:
    with pytest.raises(KernelError) as failure:
        read_settings(_config({key: value}))
    assert failure.value.status is Status.INVALID_ARG
    assert f"'{key}'" in failure.value.message and f"'{value}'" in failure.value.message


def test_shrinking_a_disabled_cpu_arena_is_refused() -> None:
    with pytest.raises(KernelError, match=r"memory\.enable_memory_arena_shrinkage"):
        read_settings(
            _config({"enable_mem_arena": "0", "memory.enable_memory_arena_shrinkage": "cpu:0"})
        )


def test_unknown_graph_level_and_accelerators_are_refused() -> None:
    with pytest.raises(KernelError, match=r"optimization\.graph\.level"):
        read_settings(_config(optimization=_graph(3)))
    with pytest.raises(KernelError, match="'fastest'"):
        read_settings(_config(optimization=_gpu_accelerator("fastest")))
    with pytest.raises(KernelError, match="'fp8'"):
        read_settings(_config(optimization=_gpu_accelerator("tensorrt", precision_mode="fp8")))
    with pytest.raises(KernelError, match="'turbo'"):
        read_settings(_config(optimization=_gpu_accelerator("tensorrt", turbo="1")))


def test_gpu_providers_with_tensorrt_and_cuda_options() -> None:
    settings = read_settings(
        _config(
            {"gpu_mem_limit": "1024", "arena_extend_strategy": "1"},
            optimization=_gpu_accelerator(
                "tensorrt",
                precision_mode="FP16",
                max_workspace_size_bytes="1073741824",
                trt_engine_cache_enable="1",
            ),
        )
    )
    assert settings.providers("KIND_GPU", 1) == [
        (
            "TensorrtExecutionProvider",
            {
                "device_id": "1",
                "trt_fp16_enable": "1",
                "trt_max_workspace_size": "1073741824",
                "trt_engine_cache_enable": "1",
            },
        ),
        (
            "CUDAExecutionProvider",
            {
                "device_id": "1",
                "gpu_mem_limit": "1024",
                "arena_extend_strategy": "kSameAsRequested",
            },
        ),
        "CPUExecutionProvider",
    ]
    assert settings.providers("KIND_CPU", 0) == ["CPUExecutionProvider"]


def _params(values: dict[str, str]) -> str:
    return "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in values.items()
    )


def test_served_model_sessions_carry_the_parameters(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    values = {
        "intra_op_thread_count": "1",
        "inter_op_thread_count": "1",
        "execution_mode": "0",
        "enable_mem_arena": "1",
        "enable_mem_pattern": "0",
        "memory.enable_memory_arena_shrinkage": "cpu:0",
    }
    extra = _params(values) + "\noptimization { graph { level: 2 } }"
    kit.write_onnx(repo, "tuned", kit.add_sub_model(), kit.add_sub_config(extra=extra))
    served = serve(repo)
    instance = served.server.route("tuned").instances[0].instance
    options = instance.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.enable_mem_pattern is False
    assert options.graph_optimization_level == Level.ORT_DISABLE_ALL
    one = np.ones((1, 16), np.int32)
    got = served.infer(protocol, "tuned", {"INPUT0": one, "INPUT1": one})  # run options apply
    np.testing.assert_array_equal(got["OUTPUT0"], 2 * one)


def test_invalid_parameter_fails_the_load_naming_it(
    kit: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    extra = _params({"execution_mode": "3"})
    kit.write_onnx(repo, "bad", kit.add_sub_model(), kit.add_sub_config(extra=extra))
    served = serve(repo, model_control_mode=ModelControlMode.EXPLICIT)
    client = served.client(protocol)
    try:
        with pytest.raises(InferenceServerException, match="'execution_mode'"):
            client.load_model("bad")
    finally:
        client.close()
