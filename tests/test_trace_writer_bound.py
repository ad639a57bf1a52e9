"""The Triton-mode trace writer's queue is bounded: a stalled trace file drops traces, counted."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from kernel import _tracing
from kernel._tracing import RequestTrace, _Sink


def test_a_stalled_trace_file_drops_traces_beyond_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tracing, "MAX_PENDING_TRACES", 3)
    path = tmp_path / "trace.json"
    os.mkfifo(path)  # the writer's open() blocks until a reader comes: a disk that stalls
    sink = _Sink(None, path, 0)  # type: ignore[arg-type]  # the writer never uses its tracer
    for number in range(1, 11):
        trace = RequestTrace(number, 0, None)
        trace.model_name = "m"
        sink.submit(trace)
    assert sink.dropped == 7
    chunks: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as fifo:
            chunks.append(fifo.read())

    reader = threading.Thread(target=read)
    reader.start()
    sink.close()
    reader.join(timeout=30)
    assert not reader.is_alive()
    written = json.loads(b"".join(chunks))
    assert sorted({entry["id"] for entry in written}) == [1, 2, 3]
    sink.submit(RequestTrace(11, 0, None))  # room again once written
    assert sink.dropped == 7
