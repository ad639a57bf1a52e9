"""The example Python-based backend, installed as a pip distribution, serving its two models
through the real tritonclient (gRPC streaming), in both execution modes of the python backend."""

from __future__ import annotations

import queue
import shutil
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from kernel.testing import ServerThread

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_entry_point_declares_the_class() -> None:
    (ep,) = [ep for ep in entry_points(group="kernel.backends") if ep.name == "textstream"]
    assert ep.value == "triton_textstream_backend.model:TritonPythonModel"
    assert ep.dist is not None and ep.dist.name == "triton-backend-textstream"


def _stream(url: str, requests: list[tuple[str, str, str]]) -> dict[str, list[Any]]:
    """Send every (model, request id, text) on one gRPC stream; each request's results up to
    its final (empty) response."""
    received: queue.Queue[Any] = queue.Queue()
    results: dict[str, list[Any]] = {rid: [] for _, rid, _ in requests}
    finished: set[str] = set()
    with grpcclient.InferenceServerClient(url) as client:
        client.start_stream(callback=lambda result, error: received.put(error or result))
        try:
            for model, rid, text in requests:
                inp = grpcclient.InferInput("TEXT", [1], "BYTES")
                inp.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
                client.async_stream_infer(
                    model, [inp], request_id=rid, enable_empty_final_response=True
                )
            for _ in range(1000):
                if len(finished) == len(requests):
                    break
                item = received.get(timeout=60)
                assert not isinstance(item, Exception), item
                response = item.get_response()
                final = response.parameters.get("triton_final_response")
                if final is not None and final.bool_param:
                    finished.add(response.id)
                    continue
                results[response.id].append(item)
        finally:
            client.stop_stream()
    assert finished == set(results)
    return results


@pytest.mark.parametrize("mode", ["process", "in_process"])
def test_two_models_share_the_backend_and_stream_word_by_word(tmp_path: Path, mode: str) -> None:
    repo = shutil.copytree(MODELS, tmp_path / "models")
    imported_before = "triton_textstream_backend.model" in sys.modules
    with ServerThread(repo, backend_config={"python": {"execution-mode": mode}}) as srv:
        results = _stream(
            srv.grpc_url,
            [
                ("shout", "a", "hello kernel world"),
                ("whisper", "b", "Quiet  Please"),
                ("shout", "c", ""),
            ],
        )
    if mode == "process" and not imported_before:
        # the server found the class from its source: only the model processes import it
        assert "triton_textstream_backend.model" not in sys.modules
    tokens = {
        rid: [item.as_numpy("TOKEN")[0].decode() for item in items]
        for rid, items in results.items()
    }
    assert tokens == {
        "a": ["HELLO!", "KERNEL!", "WORLD!"],  # one response per word, in order
        "b": ["quiet...", "please..."],  # the same backend, this model's own style file
        "c": [],  # nothing to stream: only the final flag
    }


def test_a_model_that_is_not_decoupled_fails_with_the_backends_reason(tmp_path: Path) -> None:
    repo = shutil.copytree(MODELS, tmp_path / "models")
    config = repo / "shout" / "config.pbtxt"
    config.write_text(
        config.read_text().replace("model_transaction_policy { decoupled: true }", "")
    )
    with ServerThread(repo) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        try:
            rows = {row.name: row for row in client.get_model_repository_index().models}
        finally:
            client.close()
    assert rows["whisper"].state == "READY"
    assert rows["shout"].state == "UNAVAILABLE"
    assert "the textstream backend streams its answers" in rows["shout"].reason
