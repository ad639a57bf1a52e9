"""Shared fixtures of the kernel's own tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kernel.testing import write_model


def kerneltest_config(
    behaviour: str = "identity",
    *,
    backend: str = "kerneltest",
    max_batch_size: int = 8,
    count: int = 1,
    kind: str = "KIND_CPU",
    datatype: str = "TYPE_FP32",
    dims: str = "[ 4 ]",
    extra: str = "",
    parameters: dict[str, str] | None = None,
) -> str:
    """A config.pbtxt for the ``kerneltest`` backends with two inputs and two outputs."""
    params = {"behaviour": behaviour, **(parameters or {})}
    param_text = "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in params.items()
    )
    return f"""
backend: "{backend}"
max_batch_size: {max_batch_size}
input [
  {{ name: "INPUT0" data_type: {datatype} dims: {dims} }},
  {{ name: "INPUT1" data_type: {datatype} dims: {dims} }}
]
output [
  {{ name: "OUTPUT0" data_type: {datatype} dims: {dims} }},
  {{ name: "OUTPUT1" data_type: {datatype} dims: {dims} }}
]
instance_group [ {{ count: {count} kind: {kind} }} ]
{param_text}
{extra}
"""


REPEAT_CONFIG = """
backend: "kerneltest"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
parameters { key: "behaviour" value { string_value: "repeat" } }
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty model repository folder."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def add_model() -> Callable[..., Path]:
    """``add_model(repo, name, config_text, versions=(1,), files=None)``."""
    return write_model


@pytest.fixture
def kt_config() -> Callable[..., str]:
    """The :func:`kerneltest_config` builder."""
    return kerneltest_config


@pytest.fixture
def repeat_config() -> str:
    """A decoupled ``kerneltest`` model: one response per element of IN, then final."""
    return REPEAT_CONFIG
