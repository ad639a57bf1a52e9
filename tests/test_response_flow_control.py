"""``InferenceRequest.limit_unread_responses``: a backend thread sending responses nobody reads
is held at the limit, let go as the frontend reads, and at once when the request is cancelled;
the final flag and responses sent on the event loop are never held."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from kernel._errors import Status
from kernel._inference import UNHELD_FACTOR, InferenceRequest, InferenceResponse


def _request(capacity: int) -> InferenceRequest:
    request = InferenceRequest("m", {"IN": np.zeros(1, np.int32)})
    request.limit_unread_responses(capacity)
    return request


def _producer(request: InferenceRequest, count: int, sent: list[int]) -> threading.Thread:
    def run() -> None:
        sender = request.response_sender()
        for i in range(count):
            sender.send(InferenceResponse(outputs={"OUT": np.array([i])}))
            sent.append(i)
        sender.send(final=True)
        sent.append(-1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def _until(predicate: object, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_thread_is_held_at_the_limit_and_let_go_as_responses_are_read() -> None:
    request = _request(4)
    sent: list[int] = []
    thread = _producer(request, 10, sent)
    await _until(lambda: len(sent) == 4)
    await asyncio.sleep(0.2)
    assert len(sent) == 4  # held: four unread
    responses = request.responses()
    got = [await anext(responses) for _ in range(2)]
    await _until(lambda: len(sent) == 6)
    async for response in responses:
        got.append(response)
    assert [int(r.outputs["OUT"][0]) for r in got if r.outputs] == list(range(10))
    assert got[-1].final and sent[-1] == -1
    thread.join(5)


async def test_cancel_lets_a_held_thread_go() -> None:
    request = _request(2)
    sent: list[int] = []
    thread = _producer(request, 100, sent)
    await _until(lambda: len(sent) == 2)
    request.cancel()
    await _until(lambda: sent[-1:] == [-1])  # every send went through without a reader
    thread.join(5)
    assert not thread.is_alive()


async def test_the_loop_thread_is_never_held() -> None:
    request = _request(2)  # 6 responses stay under UNHELD_FACTOR x 2
    sender = request.response_sender()
    for i in range(5):
        sender.send(InferenceResponse(outputs={"OUT": np.array([i])}))
    sender.send(final=True)
    got = [r async for r in request.responses()]
    assert len(got) == 6


async def test_a_loop_producer_too_far_ahead_ends_the_request_with_bounded_buffering() -> None:
    request = _request(2)
    sender = request.response_sender()
    for i in range(50):  # a model on the loop that never checks is_cancelled()
        sender.send(InferenceResponse(outputs={"OUT": np.array([i])}))
    sender.send(final=True)  # dropped too: the request already ended
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert request.is_cancelled()
    got = [r async for r in request.responses()]
    assert [int(r.outputs["OUT"][0]) for r in got if r.outputs] == list(range(2 * UNHELD_FACTOR))
    last = got[-1]
    assert last.final and last.error is not None
    assert last.error.status is Status.CANCELLED
    assert "did not read" in last.error.message


async def test_an_interceptor_that_holds_responses_lifts_the_limit() -> None:
    """Responses kept back for order must not hold the thread that would send the rest."""
    request = _request(2)
    kept: list[tuple[InferenceResponse, object]] = []
    request.intercept_responses(lambda r, release: kept.append((r, release)), holds=True)
    sent: list[int] = []
    thread = _producer(request, 10, sent)
    thread.join(10)
    assert not thread.is_alive() and sent[-1] == -1
    await _until(lambda: len(kept) == 11)
    for response, release in kept:
        release(response)  # type: ignore[operator]
    got = [r async for r in request.responses()]
    assert len(got) == 11 and got[-1].final


async def test_watch_reading_credits_each_taken_response_and_tells_a_cancel() -> None:
    request = _request(3)
    taken: list[int] = []
    detached: list[bool] = []
    assert request.watch_reading(lambda: taken.append(1), lambda: detached.append(True)) == 3
    sender = request.response_sender()
    for i in range(4):
        sender.send(InferenceResponse(outputs={"OUT": np.array([i])}))  # on the loop: not held
    responses = request.responses()
    await anext(responses)
    await anext(responses)
    assert len(taken) == 2 and not detached
    request.cancel()
    assert detached == [True]
    request.cancel()
    assert detached == [True]  # once
    unlimited = InferenceRequest("m", {"IN": np.zeros(1, np.int32)})
    assert unlimited.watch_reading(lambda: None, lambda: None) == 0
