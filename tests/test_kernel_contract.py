"""The plugin contract's guarantees: one final answer per request, whatever execute does."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import kernel
from kernel import InferenceRequest, KernelError, Status
from kernel._inference import InferenceResponse
from kernel.testing import run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def test_public_surface() -> None:
    assert sorted(kernel.__all__) == sorted(
        [
            "DATATYPES",
            "PUBLIC_MODULES",
            "Backend",
            "BackendAttributes",
            "BackendContext",
            "InferenceRequest",
            "InferenceResponse",
            "InferenceServer",
            "InstanceContext",
            "KernelError",
            "MemoryUsage",
            "Model",
            "ModelConfig",
            "ModelContext",
            "ModelControlMode",
            "ModelInstance",
            "ParameterValue",
            "RequestFlags",
            "ResponseSender",
            "ServerHandle",
            "ServerOptions",
            "Status",
            "__version__",
            "datatype_of",
            "datatype_to_dtype",
        ]
    )
    for name in kernel.__all__:
        assert hasattr(kernel, name), name


def _pair() -> dict[str, np.ndarray]:
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    return {"INPUT0": a, "INPUT1": a * 2}


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("raise", "kerneltest: asked to raise"),
        ("no_answer", "returned from execute without answering"),
    ],
)
async def test_unanswered_or_raising_execute_gets_one_error(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    behaviour: str,
    message: str,
) -> None:
    add_model(repo, "m", kt_config(behaviour))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        response = await srv.server.infer_once(InferenceRequest("m", _pair()))
        assert response.error is not None
        assert message in response.error.message
        assert response.final
        # The server keeps serving, and failures are counted.
        stats = srv.server.model_statistics("m")[0]
        assert stats.fail.count == 1


async def test_second_answer_is_refused_to_the_backend(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    log = tmp_path / "events.log"
    add_model(repo, "m", kt_config("answer_twice"))
    options = {**NO_ENDPOINTS, "backend_config": {"kerneltest": {"lifecycle_log": str(log)}}}
    async with run_server(repo, **options) as srv:
        response = await srv.server.infer_once(InferenceRequest("m", _pair()))
        assert response.error is None
        np.testing.assert_array_equal(response.outputs["OUTPUT0"], _pair()["INPUT0"])
    assert "second answer refused: the request has already received its final response" in (
        log.read_text()
    )


async def test_decoupled_stream_from_another_thread(
    repo: Path, add_model: Callable[..., Path], repeat_config: str
) -> None:
    add_model(repo, "repeat", repeat_config)
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        values = np.array([5, 6, 7], dtype=np.int32)
        request = InferenceRequest("repeat", {"IN": values})
        responses = [r async for r in srv.server.infer(request)]
        assert [int(r.outputs["OUT"][0]) for r in responses[:-1]] == [5, 6, 7]
        assert [r.final for r in responses] == [False, False, False, True]
        assert responses[-1].outputs == {}


async def test_response_sender_dropped_without_final_closes_request() -> None:
    request = InferenceRequest("m", {})
    sender = request.response_sender()
    sender.send(InferenceResponse(outputs={"OUT": np.zeros(1)}))
    del sender
    request._sender = None  # the backend let go of everything
    gc.collect()
    responses = [r async for r in request.responses()]
    assert len(responses) == 2
    assert responses[-1].final
    assert responses[-1].error is not None
    assert "without the final flag" in responses[-1].error.message


async def test_answers_from_threads_are_delivered_once() -> None:
    request = InferenceRequest("m", {})
    outcomes: list[str] = []

    def answer() -> None:
        try:
            request.respond({"OUT": np.ones(1)})
            outcomes.append("sent")
        except KernelError as exc:
            assert exc.status is Status.INTERNAL
            outcomes.append("refused")

    threads = [threading.Thread(target=answer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    response = await request.final_response()
    assert response.error is None
    assert sorted(outcomes) == ["refused"] * 7 + ["sent"]


def test_sender_needs_response_or_final() -> None:
    sender = InferenceRequest("m", {}).response_sender()
    with pytest.raises(KernelError, match="needs a response or final"):
        sender.send()
    sender.send(final=True)
    assert sender.is_closed
    with pytest.raises(KernelError, match="already received its final response"):
        sender.send(final=True)
