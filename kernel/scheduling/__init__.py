"""Schedulers: how queued requests become the batches an instance executes."""

from kernel.scheduling._base import Scheduler
from kernel.scheduling.direct import DirectScheduler

__all__ = ["DirectScheduler", "Scheduler"]
