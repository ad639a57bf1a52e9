"""Which GPUs this process may use, found without importing any CUDA library."""

from __future__ import annotations

import functools
import os
from pathlib import Path

__all__ = ["visible_gpus"]

_DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")


@functools.cache
def visible_gpus() -> list[int]:
    """Device ids of the NVIDIA GPUs visible to this process (``CUDA_VISIBLE_DEVICES`` applied).

    Empty when no NVIDIA driver is loaded: KIND_GPU instances then fail their model's load.
    """
    try:
        count = sum(1 for _ in _DRIVER_GPUS.iterdir())
    except OSError:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    ids: list[int] = []
    for part in visible.split(","):
        part = part.strip()
        if not part.isdigit():
            break  # CUDA stops at the first entry it cannot parse (UUIDs are not mapped here)
        if int(part) < count:
            ids.append(len(ids))
    return ids
