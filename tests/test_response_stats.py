"""``response_stats`` of decoupled models, through the statistics API of both protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kernel._inference import InferenceRequest
from kernel.testing import run_server, write_model


async def test_decoupled_responses_are_counted_by_index(
    repo: Path, repeat_config: str, kt_config: Any
) -> None:
    write_model(repo, "repeat", repeat_config)
    write_model(repo, "add", kt_config("addsub"))
    async with run_server(repo) as srv:
        for _ in range(2):
            request = InferenceRequest("repeat", {"IN": np.array([1, 2, 3], np.int32)})
            answers = [r async for r in srv.server.infer(request)]
            assert len(answers) == 4 and answers[-1].final and not answers[-1].outputs
        inputs = {"INPUT0": np.ones((1, 4), np.float32), "INPUT1": np.ones((1, 4), np.float32)}
        assert (await srv.server.infer_once(InferenceRequest("add", inputs))).error is None

        def fetch() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            http = httpclient.InferenceServerClient(srv.http_url)
            grpc = grpcclient.InferenceServerClient(srv.grpc_url)
            try:
                return (
                    http.get_inference_statistics("repeat")["model_stats"][0],
                    grpc.get_inference_statistics("repeat", as_json=True)["model_stats"][0],
                    http.get_inference_statistics("add")["model_stats"][0],
                )
            finally:
                http.close()
                grpc.close()

        over_http, over_grpc, plain = await anyio.to_thread.run_sync(fetch)
    stats = over_http["response_stats"]
    assert sorted(stats) == ["0", "1", "2", "3"]
    for key in ("0", "1", "2"):
        assert stats[key]["success"]["count"] == 2
        assert stats[key]["compute_infer"]["count"] == 2
        assert stats[key]["compute_output"]["count"] == 2
        assert stats[key]["success"]["ns"] == (
            stats[key]["compute_infer"]["ns"] + stats[key]["compute_output"]["ns"]
        )
        assert stats[key]["empty_response"]["count"] == 0
        assert stats[key]["fail"]["count"] == 0
    assert stats["3"]["empty_response"]["count"] == 2
    assert stats["3"]["success"]["count"] == 0
    assert stats["0"]["compute_infer"]["ns"] > 0
    grpc_stats = over_grpc["response_stats"]
    assert sorted(grpc_stats) == ["0", "1", "2", "3"]
    assert grpc_stats["1"]["success"]["count"] == "2"  # uint64 as a JSON string (protobuf)
    assert grpc_stats["3"]["empty_response"]["count"] == "2"
    assert plain["response_stats"] == {}, "non-decoupled models have none, as in Triton"


async def test_a_client_leaving_a_stream_counts_a_cancel(repo: Path, repeat_config: str) -> None:
    write_model(repo, "repeat", repeat_config)
    async with run_server(repo, http_port=None, grpc_port=None, metrics_port=None) as srv:
        request = InferenceRequest("repeat", {"IN": np.arange(50, dtype=np.int32)})
        stream = srv.server.infer(request)
        first = await stream.__anext__()
        assert first.outputs
        await stream.aclose()  # type: ignore[attr-defined]
        stats = srv.server.model_statistics("repeat")[0].response_stats
    assert stats[0].success.count == 1
    assert sum(s.cancel.count for s in stats.values()) == 1
