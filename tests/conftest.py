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


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEM files made at test time with ``trustme``: a CA; a server certificate for 127.0.0.1 and
    localhost signed by it (``cert``, ``key``); a client certificate signed by it (``client_cert``,
    ``client_key``); and a client certificate from another CA (``stranger_cert``/``_key``)."""
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.example.com")
    stranger = other_ca.issue_cert("stranger.example.com")
    files = {
        "ca": ca.cert_pem,
        "cert": server.cert_chain_pems[0],
        "key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
        "stranger_cert": stranger.cert_chain_pems[0],
        "stranger_key": stranger.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = folder / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return paths
