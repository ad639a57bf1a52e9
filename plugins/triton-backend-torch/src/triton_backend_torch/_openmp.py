"""torch's OpenMP threads sleep when idle instead of spinning: chosen before torch loads.

torch on Linux runs its intra-op work on GNU OpenMP (libgomp), which reads its wait policy
once, when it loads. Its default has a thread that runs out of work spin up to 300,000 pause
instructions (milliseconds) before sleeping: after every parallel region the workers spin, and
a thread whose partner lost its core spins at the barrier until the partner gets it back. That
suits a process that owns its cores. In a server the spin takes the cores the event loop, the
frontends and the clients need: on 2 cores, serving a small conv net with dynamic batching,
the server spent 342 us of CPU per inference beyond the transport and torch's own 190 us
per row on a quiet machine, and on a loaded one libgomp's spin loops took 72% of the server's
CPU (bench/frameworks.py; figures in bench/RESULTS.md).

So, unless the environment chooses (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set), the plugin
loads torch with ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep at once. The variable
is removed again once torch has loaded, so processes the server starts later (Python models in
their own process) see the environment they were given. ``OMP_WAIT_POLICY=ACTIVE`` (or any
``GOMP_SPINCOUNT``) in the server's environment keeps libgomp's own behaviour. This is a
difference from Triton's PyTorch backend, whose libtorch keeps libgomp's default.

Nothing can change the policy once a libgomp is loaded: when torch (or another library using
libgomp) was imported before the plugin, the policy is whatever applied then, and the log
says so.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

WAIT_POLICY = "OMP_WAIT_POLICY"
SPIN_COUNT = "GOMP_SPINCOUNT"
PASSIVE = "PASSIVE"


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """How torch's OpenMP threads wait, as the plugin found or chose it (for the log)."""

    chosen: bool
    """The plugin set ``OMP_WAIT_POLICY=PASSIVE`` for torch's load."""
    reason: str


def _libgomp_loaded() -> bool:
    """Whether a libgomp is already mapped into this process (its policy is then fixed)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return "libgomp" in maps


def import_torch_passively() -> WaitPolicy:
    """Import torch with idle OpenMP threads sleeping, unless the environment or an earlier
    import decided already; the environment is left as it was."""
    if "torch" in sys.modules:
        return WaitPolicy(False, "torch was imported before the plugin: OpenMP waits as it did")
    given = [key for key in (WAIT_POLICY, SPIN_COUNT) if key in os.environ]
    if given:
        setting = ", ".join(f"{key}={os.environ[key]}" for key in given)
        return WaitPolicy(False, f"OpenMP threads wait as the environment says ({setting})")
    if _libgomp_loaded():
        return WaitPolicy(
            False, "libgomp was loaded before torch: OpenMP threads wait as it started"
        )
    os.environ[WAIT_POLICY] = PASSIVE
    try:
        import torch  # noqa: F401  (libgomp reads the policy now, once)
    finally:
        del os.environ[WAIT_POLICY]
    return WaitPolicy(
        True,
        "idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE for torch's load; set"
        " OMP_WAIT_POLICY=ACTIVE or GOMP_SPINCOUNT in the server's environment to choose)",
    )


POLICY = import_torch_passively()
"""What applied when the plugin was imported."""
