"""``preserve_ordering``: responses reach clients in the order their requests were scheduled."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kernel._inference import InferenceRequest, InferenceResponse

__all__ = ["Release", "ResponseOrder"]

Release = Callable[[InferenceResponse], None]


@dataclass(eq=False, slots=True)
class _Pending:
    held: list[tuple[InferenceResponse, Release]] = field(default_factory=list)
    done: bool = False


class ResponseOrder:
    """Holds back the responses of later requests until every earlier request got its final one.

    Requests are tracked as they go into a batch (Triton's order: the order requests leave the
    queue), so every tracked request is executing and will be answered without waiting on
    anything else -- tracking them while still queued could hold a sequence's answer behind a
    request that waits for that very sequence to end. The oldest unfinished request's responses
    pass straight through (a decoupled model's stream keeps streaming); a later request's
    responses wait, and go out in order as soon as the requests before it are finished.
    """

    def __init__(self) -> None:
        self._queue: deque[_Pending] = deque()

    def track(self, request: InferenceRequest) -> Callable[[InferenceResponse, Release], None]:
        """Start tracking ``request``; returns what its interceptor must hand responses to."""
        pending = _Pending()
        self._queue.append(pending)

        def arrive(response: InferenceResponse, release: Release) -> None:
            pending.held.append((response, release))
            pending.done = pending.done or response.final
            self._flush()

        return arrive

    def _flush(self) -> None:
        while self._queue:
            head = self._queue[0]
            held, head.held = head.held, []
            for response, release in held:
                release(response)
            if not head.done:
                return
            self._queue.popleft()
