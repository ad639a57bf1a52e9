"""When the server's loop waits a moment for a model process's answer instead of sleeping.

One request at a time (a client that sends the next request only once it has the answer), the
loop has nothing else to do while the model process computes, and the answer of a small model
comes back within tens of microseconds. Going back to ``epoll`` for it costs the model process
a doorbell (a system call that wakes another CPU) and the loop a wake-up: on this 2-core VM
about 40 us of the round trip, measured. Looking at the ring for that long instead costs
nothing but CPU that sat idle.

The loop may only wait when nothing else can want it, and only when waiting pays:

- **alone**: this batch is the only one out, in every model process of this server (a batch
  out elsewhere is a doorbell the loop must be free to hear), and the process holds no other
  request of this model;
- **sequential**: the last :data:`STREAK` batches were alone too (one client in sequence, not
  a lull between concurrent ones: with several clients the loop always has a request to read);
- **quick**: the process answered recently within :data:`LIMIT` (a moving average of the
  round trips, which keeps being measured while the loop does not wait, so a model that
  becomes quick again is noticed).

The wait is at most twice the recent round trip and never above :data:`LIMIT`, and it yields
the CPU at every look (``sched_yield``, which also lets the server's other threads take the
GIL): a model process woken on the loop's own CPU, or anything else runnable there, runs first.
A wait that ends empty-handed (a loaded machine, where the model process waits for a CPU) turns
waiting off for the next 8 batches, then 16, ... up to 1024, until a wait finds its answer
again: on a busy machine the loop sleeps as before (measured: waiting without this backoff cost
a third of the throughput at load average 12). Sans-IO: the caller measures and spins, this
class only decides.
"""

from __future__ import annotations

__all__ = ["LIMIT", "LINGER", "SMALL_BATCH", "SMALL_BATCH_LINGER", "STREAK", "QuickAnswers"]

LIMIT = 150e-6
"""The longest the loop looks at the ring for an answer by default (seconds;
``--backend-config=python,answer-wait-us``)."""
STREAK = 8
"""Batches in a row that must have been alone before the loop waits."""
LINGER = 400e-6
"""When the loop waits for a batch's answer, the model process, once it answered, looks for
the next request this long (yielding the CPU at every look) before it sleeps: the next request
of a client in sequence then costs no doorbell and no wake-up either. Measured on the 2-core
machine at c=1 (bench/RESULTS.md, issue 14): ~3,450 -> ~5,700 infer/s over gRPC with the same
CPU per request; only for lone batches (with several requests in flight the process's own
30 us look-ahead is enough, and a longer one took CPU the server needed: -20% at c=8)."""
SMALL_BATCH_LINGER = 150e-6
"""Behind the dynamic batcher, after a batch of at most :data:`SMALL_BATCH` requests the model
process looks for the next batch this long before it sleeps: batches that small mean a few
clients whose next requests come within a round trip, and each one found so costs no doorbell
and no wake-up. Measured on the 2-core machine with the large-input model at concurrency 4
(bench/RESULTS.md, issue 22): +8% over gRPC, +18% over HTTP; after every batch it cost at
concurrency 16 (batches of ~6, where the next batch is mostly there already), hence the size."""
SMALL_BATCH = 2
_WEIGHT = 0.25
"""Of the newest round trip in the moving average."""
_FIRST_PAUSE = 8
_LONGEST_PAUSE = 1024


class QuickAnswers:
    """Per model process: how long to look at the ring after sending a batch (0: do not)."""

    __slots__ = ("_average", "_limit", "_pause", "_paused", "_streak")

    def __init__(self, limit: float = LIMIT) -> None:
        self._limit = limit
        """The longest wait (``--backend-config=python,answer-wait-us``; 0: never)."""
        self._streak = 0
        self._average = limit  # unknown: as slow as allowed, so it must prove quick first
        self._pause = 0
        """Batches not to wait for after the last empty-handed wait (doubles each miss)."""
        self._paused = 0
        """Batches still not waited for."""

    def budget(self, alone: bool) -> float:
        """Seconds to wait for the answer of the batch just sent (``alone``: see the module)."""
        if not alone:
            self._streak = 0
            return 0.0
        if self._streak < STREAK:
            self._streak += 1
            return 0.0
        if self._paused:
            self._paused -= 1
            return 0.0
        if self._average >= self._limit:
            return 0.0
        return min(self._limit, 2.0 * self._average)

    def waited(self, found: bool) -> None:
        """How a wait ended: with the answer, or empty-handed (then pause, longer each time)."""
        if found:
            self._pause = 0
        else:
            self._pause = min(_LONGEST_PAUSE, max(_FIRST_PAUSE, 2 * self._pause))
            self._paused = self._pause

    def answered(self, seconds: float) -> None:
        """A batch's round trip (sent to answer read), every batch, waited for or not."""
        self._average += _WEIGHT * (min(seconds, 10 * self._limit) - self._average)

    @property
    def average(self) -> float:
        return self._average
