"""``memory_usage`` in the statistics API: what a backend reports through
``Model.memory_usage`` once a version loaded, in Triton's JSON (HTTP) and proto (gRPC) shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kernel import MemoryUsage, Model
from kernel.testing import ServerThread, write_model


def test_reported_usage_shows_on_both_protocols(repo: Path, kt_config: Any) -> None:
    write_model(
        repo,
        "reports",
        kt_config("addsub", parameters={"memory_usage": "CPU:0:4096;GPU:1:1048576"}),
    )
    write_model(repo, "silent", kt_config("addsub"))
    with ServerThread(repo) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            stats = http.get_inference_statistics("reports")["model_stats"][0]
            assert stats["memory_usage"] == [
                {"type": "CPU", "id": 0, "byte_size": 4096},
                {"type": "GPU", "id": 1, "byte_size": 1048576},
            ]
            silent = http.get_inference_statistics("silent")["model_stats"][0]
            assert silent["memory_usage"] == []
            message = grpc.get_inference_statistics("reports").model_stats[0]
            assert [(m.type, m.id, m.byte_size) for m in message.memory_usage] == [
                ("CPU", 0, 4096),
                ("GPU", 1, 1048576),
            ]
            as_json = grpc.get_inference_statistics("reports", as_json=True)["model_stats"][0]
            assert as_json["memory_usage"][1] == {"type": "GPU", "id": "1", "byte_size": "1048576"}
            assert not grpc.get_inference_statistics("silent").model_stats[0].memory_usage
        finally:
            http.close()
            grpc.close()


def test_a_failing_report_does_not_fail_the_load(
    repo: Path, kt_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    write_model(repo, "a", kt_config("addsub", parameters={"memory_usage": "raise"}))
    with ServerThread(repo) as server:
        http = httpclient.InferenceServerClient(server.http_url)
        try:
            assert http.is_model_ready("a")
            assert http.get_inference_statistics("a")["model_stats"][0]["memory_usage"] == []
        finally:
            http.close()
    assert any("could not report its memory usage" in r.getMessage() for r in caplog.records)


def test_the_hook_is_optional_and_none_by_default() -> None:
    assert Model.memory_usage(object()) is None  # type: ignore[arg-type]
    usage = MemoryUsage("CPU", 0, 10)
    assert (usage.type, usage.id, usage.byte_size) == ("CPU", 0, 10)
