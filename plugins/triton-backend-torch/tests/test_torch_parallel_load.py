"""Exported programs load in parallel: torch.export.load keeps a process-wide deserializer, so
two models (or instances) loading at once must not meet inside it."""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from triton_backend_torch._program import load

from .conftest import exported, save


class _Scale(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_exported_programs_load_in_parallel_threads(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(save(exported(_Scale(), torch.ones(2, 3))))
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait(timeout=30)
        try:
            for _ in range(3):
                program = load(path, "scale", torch.device("cpu"))
                assert torch.equal(program.call(torch.ones(1, 3)), torch.full((1, 3), 2.0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
