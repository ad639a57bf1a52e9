"""Triton's rate limiter (``--rate-limit execution_count``): instances execute only while they
hold the resources their ``instance_group.rate_limiter`` names.

Resources are counted per device (a KIND_CPU or KIND_MODEL instance uses the CPU's pool, device
-1) or, when ``global``, once for the whole server. A pool's size is what
``--rate-limit-resource <name>:<count>[:<device>]`` gives, else the largest count any one
instance asks for (so every instance can run alone), as in Triton. An instance acquires all it
names before a batch executes and gives them back when it finished.

When several instances wait, the rate limiter grants the one with the lowest *pass*: each grant
advances an instance's pass by its ``priority`` (0 counts as 1), so an instance of priority 2
gets half the chances of one of priority 1 (stride scheduling). Only waiters whose resources
are free are considered, so a large request does not block smaller ones that fit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from kernel._proto.inference import ModelRateLimiter

__all__ = ["CPU_DEVICE", "Need", "RateLimiter", "parse_rate_limit_resource"]

GLOBAL = "global"
CPU_DEVICE = -1


@dataclass(eq=False, slots=True)
class Need:
    """What one instance needs: ``(resource, device) -> count``, and its priority."""

    counts: dict[tuple[str, int | str], int]
    priority: int
    pass_value: int = 0


@dataclass(eq=False, slots=True)
class _Waiter:
    need: Need
    future: asyncio.Future[None]
    order: int


@dataclass(slots=True)
class _Pools:
    size: dict[tuple[str, int | str], int] = field(default_factory=dict)
    used: dict[tuple[str, int | str], int] = field(default_factory=dict)


def parse_rate_limit_resource(text: str) -> tuple[str, int, int | str]:
    """``<name>:<count>[:<device>]`` as ``(name, count, device)``; no device: ``global``.

    :raises ValueError: naming what is wrong.
    """
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"expected <name>:<count>[:<device>], got '{text}'")
    if len(parts) == 3:
        if not parts[2].lstrip("-").isdigit():
            raise ValueError(f"the device of '{text}' must be a number")
        return parts[0], int(parts[1]), int(parts[2])
    return parts[0], int(parts[1]), GLOBAL


class RateLimiter:
    """One per server; the instances of every model share it. Runs on the event loop."""

    def __init__(self, resources: Mapping[tuple[str, int | str], int] | None = None) -> None:
        self._given = dict(resources or {})
        self._pools = _Pools(size=dict(self._given))
        self._waiting: list[_Waiter] = []
        self._order = 0
        self._pass = 0

    def register(self, spec: ModelRateLimiter | None, device: int) -> Need:
        """What an instance on ``device`` (-1: the CPU) needs; grows pools the command line did
        not size to the largest single need."""
        counts: dict[tuple[str, int | str], int] = {}
        for resource in spec.resources if spec is not None else ():
            key = (resource.name, GLOBAL if resource.global_ else device)
            counts[key] = counts.get(key, 0) + resource.count
        for key, count in counts.items():
            if key not in self._given:
                self._pools.size[key] = max(self._pools.size.get(key, 0), count)
        priority = max(1, spec.priority if spec is not None else 1)
        return Need(counts, priority, self._pass)

    def _fits(self, need: Need) -> bool:
        pools = self._pools
        return all(
            pools.used.get(key, 0) + count <= pools.size.get(key, 0)
            for key, count in need.counts.items()
        )

    def _take(self, need: Need) -> None:
        for key, count in need.counts.items():
            self._pools.used[key] = self._pools.used.get(key, 0) + count
        self._pass = max(self._pass, need.pass_value)
        need.pass_value += need.priority

    async def acquire(self, need: Need) -> None:
        """Wait until ``need``'s resources are free and it is its turn; take them."""
        if not self._waiting and self._fits(need):
            self._take(need)
            return
        loop = asyncio.get_running_loop()
        self._order += 1
        waiter = _Waiter(need, loop.create_future(), self._order)
        # An instance that waited long must not be starved by its own earlier, low passes.
        need.pass_value = max(need.pass_value, self._pass)
        self._waiting.append(waiter)
        try:
            await waiter.future
        except BaseException:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self.release(need)  # granted while being cancelled: give it back
            raise

    def release(self, need: Need) -> None:
        """Give back what :meth:`acquire` took, and grant waiters that now fit."""
        for key, count in need.counts.items():
            self._pools.used[key] -= count
        self._grant()

    def _grant(self) -> None:
        while True:
            ready = [w for w in self._waiting if not w.future.done() and self._fits(w.need)]
            if not ready:
                return
            chosen = min(ready, key=lambda w: (w.need.pass_value, w.order))
            self._waiting.remove(chosen)
            self._take(chosen.need)
            chosen.future.set_result(None)
