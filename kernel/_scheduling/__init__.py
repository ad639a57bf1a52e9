"""Schedulers: how queued requests become the batches an instance executes.

The config picks the scheduler, as in Triton: ``dynamic_batching`` the :class:`DynamicBatcher`,
``sequence_batching`` the :class:`SequenceBatcher`, ``platform: "ensemble"`` the
:class:`EnsembleScheduler` (its pipelines run in :class:`EnsembleBackend`), and anything else the
:class:`DirectScheduler` (one request per batch, first come first served).
"""

from __future__ import annotations

from pathlib import Path

from kernel._proto.inference import ModelConfig
from kernel._scheduling._base import Scheduler
from kernel._scheduling.direct import DirectScheduler
from kernel._scheduling.dynamic import DynamicBatcher
from kernel._scheduling.ensemble import EnsembleBackend, EnsembleHost, EnsembleScheduler
from kernel._scheduling.sequence import SequenceBatcher

__all__ = [
    "DirectScheduler",
    "DynamicBatcher",
    "EnsembleBackend",
    "EnsembleHost",
    "EnsembleScheduler",
    "Scheduler",
    "SequenceBatcher",
    "scheduler_for",
]


def scheduler_for(config: ModelConfig, model_dir: Path | None = None) -> Scheduler:
    """The scheduler ``config`` selects; ``model_dir`` holds files it may read (the sequence
    batcher's ``initial_state`` data files).

    :raises KernelError: ``INVALID_ARG`` for scheduler settings that cannot work.
    """
    if config.platform == "ensemble":
        return EnsembleScheduler()
    if config.dynamic_batching is not None:
        return DynamicBatcher(config)
    if config.sequence_batching is not None:
        return SequenceBatcher(config, model_dir)
    return DirectScheduler()
