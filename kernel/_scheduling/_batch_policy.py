"""Triton's rule for cutting a batch out of a queue: preferred sizes, queue delay, shapes.

Shared by the dynamic batcher and the sequence batcher's ``oldest`` strategy, which batch the
same way and differ only in where their candidate requests come from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kernel._inference import InferenceRequest
from kernel._proto.inference import ModelConfig

__all__ = ["BatchPolicy"]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How large a batch may grow and how long the first request of one may wait.

    ``max_batch`` counts rows (the sum of the requests' batch sizes); a model without batching
    (``max_batch_size: 0``) gets 1, so every batch holds exactly one request.
    """

    max_batch: int
    preferred: frozenset[int]
    delay_ns: int
    ragged: frozenset[str]
    """Inputs with ``allow_ragged_batch``: their shapes need not agree within a batch."""

    @classmethod
    def from_config(
        cls, config: ModelConfig, preferred: Iterable[int], delay_us: int
    ) -> BatchPolicy:
        """The policy for ``config`` with the given batcher settings.

        As Triton does, a batching model with no preferred sizes prefers its max batch size.
        """
        max_batch = max(1, config.max_batch_size)
        sizes = frozenset(preferred)
        if not sizes and config.max_batch_size > 0:
            sizes = frozenset({max_batch})
        ragged = frozenset(t.name for t in config.input if t.allow_ragged_batch)
        return cls(max_batch, sizes, delay_us * 1000, ragged)

    @property
    def max_preferred(self) -> int:
        return max(self.preferred) if self.preferred else self.max_batch

    def compatible(self, first: InferenceRequest, other: InferenceRequest) -> bool:
        """Whether ``other`` may join a batch started by ``first``: the same inputs, and equal
        shapes past the batch dimension except for ragged inputs."""
        if first.inputs.keys() != other.inputs.keys():
            return False
        for name, array in first.inputs.items():
            if name not in self.ragged and array.shape[1:] != other.inputs[name].shape[1:]:
                return False
        return True

    def decide(self, candidates: Sequence[InferenceRequest], now: int) -> tuple[int, int | None]:
        """How many leading ``candidates`` (in scheduling order) to send as a batch now.

        Returns ``(count, None)`` to send, or ``(0, deadline)`` to wait for more requests until
        the monotonic ``deadline`` in ns (``None``: until something changes). Triton's rule: a
        batch that reaches a preferred size goes at once; one that cannot grow (full, or the
        next request's shapes differ) goes at once; otherwise the batch waits until its oldest
        request has waited ``max_queue_delay_microseconds``, then goes as it is.
        """
        count = rows = best = 0
        send_now = False
        max_preferred = self.max_preferred
        for request in candidates:
            size = max(1, request.batch_size)
            if count:
                if rows + size > max_preferred and not best:
                    best = count
                if rows + size > self.max_batch or not self.compatible(candidates[0], request):
                    send_now = True
                    break
            count += 1
            rows += size
            if rows in self.preferred:
                best = count
        if not count:
            return 0, None
        oldest = min(r.enqueued_ns for r in candidates[:count])
        exceeded = self.delay_ns > 0 and now - oldest >= self.delay_ns
        if best and not exceeded:
            return best, None
        if send_now or rows >= max_preferred or exceeded or self.delay_ns == 0:
            return count, None
        return 0, oldest + self.delay_ns
