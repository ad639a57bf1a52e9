"""Shared memory that runs out is a clear error for that request, never a SIGBUS.

A container's ``/dev/shm`` is 64 MB unless sized. The test gives the model processes a real,
tiny tmpfs (``--backend-config=python,shm-directory=DIR``, mounted for the test; it needs the
privilege to mount, as root in CI) and sends tensors that do not fit: on the server's side (a
request's inputs) and on the model's side (a response's outputs).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from triton_backend_python._wire import INLINE_LIMIT
from tritonclient.utils import InferenceServerException

from kernel.testing import RunningServer, ServerThread


@pytest.fixture
def tiny_shm(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MiB tmpfs: room for one 1 MiB slab, not two."""
    folder = tmp_path / "shm"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, timeout=30)


@pytest.fixture
def shm_server(tmp_path: Path, tiny_shm: Path, helpers: Any) -> Iterator[RunningServer]:
    repository = helpers.make_repository(tmp_path / "models", ["python_echo", "python_add_sub"])
    config = {"python": {"shm-directory": str(tiny_shm)}}
    with ServerThread(repository, backend_config=config) as served:
        yield served


def test_shared_memory_that_runs_out_fails_only_that_request(
    shm_server: RunningServer, tiny_shm: Path, helpers: Any
) -> None:
    served = shm_server
    small = np.arange(16, dtype=np.float32)

    # Inputs too large for the tmpfs: the server cannot reserve a slab for them.
    huge = np.zeros(4 << 20, dtype=np.uint8).view(np.float32)
    with pytest.raises(InferenceServerException) as raised:
        helpers.grpc_infer(served, "python_echo", {"INPUT0": huge})
    message = raised.value.message()
    assert "cannot reserve" in message and str(tiny_shm) in message, message
    assert "--shm-size" in message

    # Inputs that fit (one 1 MiB slab), outputs that no longer do: the model process cannot
    # reserve its slab, and the request gets that reason.
    medium = np.ones((INLINE_LIMIT * 4) // 4, dtype=np.float32)
    with pytest.raises(InferenceServerException) as raised:
        helpers.http_infer(served, "python_echo", {"INPUT0": medium})
    assert "cannot reserve" in raised.value.message(), raised.value.message()

    # Nothing crashed: the same model and the others keep serving what fits.
    result = helpers.http_infer(served, "python_echo", {"INPUT0": small})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), small + 1)
    a = np.arange(4, dtype=np.float32)
    result = helpers.grpc_infer(served, "python_add_sub", {"INPUT0": a, "INPUT1": a})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)
    with httpclient.InferenceServerClient(served.http_url) as client:
        assert client.is_server_live()
        assert client.is_model_ready("python_echo")


def test_shm_directory_must_be_a_writable_folder(tmp_path: Path, helpers: Any) -> None:
    repository = helpers.make_repository(tmp_path / "models", ["python_add_sub"])
    config = {"python": {"shm-directory": str(tmp_path / "missing")}}
    with (
        ServerThread(repository, backend_config=config) as served,
        httpclient.InferenceServerClient(served.http_url) as client,
    ):
        index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["python_add_sub"]["state"] == "UNAVAILABLE"
    assert "is not a writable folder" in index["python_add_sub"]["reason"]
