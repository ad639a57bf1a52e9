"""A backend's preferred instance kind (Triton's ``BackendAttributeAddPreferredInstanceGroup``)
decides the default group and KIND_AUTO where a GPU is visible; without one, KIND_GPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kernel._config_text import parse_model_config
from kernel._proto.inference import ModelInstanceGroupKind
from kernel._repository import normalize_config
from kernel.testing import run_server, simulated_gpus

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}
PLAIN = 'backend: "b"\nmax_batch_size: 0\n'
AUTO = PLAIN + "instance_group [ { kind: KIND_AUTO count: 2 } ]\n"


def _kinds(text: str, gpus: int, preferred: str = "") -> list[ModelInstanceGroupKind]:
    config = normalize_config(
        parse_model_config(text, "cfg"), "cfg", gpus=gpus, preferred_kind=preferred
    )
    return [group.kind for group in config.instance_group]


def test_the_preference_decides_where_a_gpu_is_visible() -> None:
    cpu, gpu = ModelInstanceGroupKind.CPU, ModelInstanceGroupKind.GPU
    assert _kinds(PLAIN, gpus=1) == [gpu]
    assert _kinds(AUTO, gpus=1) == [gpu]
    assert _kinds(PLAIN, gpus=1, preferred="KIND_CPU") == [cpu]
    assert _kinds(AUTO, gpus=1, preferred="KIND_CPU") == [cpu]
    assert _kinds(PLAIN, gpus=0, preferred="KIND_GPU") == [cpu]  # no GPU: the CPU anyway
    explicit = PLAIN + "instance_group [ { kind: KIND_GPU } ]\n"
    assert _kinds(explicit, gpus=1, preferred="KIND_CPU") == [gpu]  # the config wins


async def test_a_backend_without_preference_gets_the_visible_gpu(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
) -> None:
    text = kt_config("identity").replace("instance_group [ { count: 1 kind: KIND_CPU } ]", "")
    add_model(repo, "m", text)
    with simulated_gpus([0]):
        async with run_server(repo, **NO_ENDPOINTS) as srv:
            [group] = srv.server.model_config("m").instance_group
            assert group.kind == ModelInstanceGroupKind.GPU
