"""torch's OpenMP wait policy: the plugin loads torch with idle threads sleeping unless the
environment or an earlier import chose, and leaves the environment as it found it.

Each case imports the plugin in a fresh interpreter (libgomp reads its policy once per
process); ``OMP_DISPLAY_ENV=VERBOSE`` has libgomp print, to stderr, the spin count it started
with: how many pause instructions an idle thread spins before it sleeps (0 when passive).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_PROBE = """
import json, os, sys
{before}
import triton_backend_torch
from triton_backend_torch._openmp import POLICY
print(json.dumps({{"chosen": POLICY.chosen, "reason": POLICY.reason,
                   "env": os.environ.get("OMP_WAIT_POLICY")}}))
"""


def _run(before: str = "", **env: str) -> tuple[dict[str, object], str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    clean.update(env, OMP_DISPLAY_ENV="VERBOSE")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(before=before)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _spin_count(stderr: str) -> int:
    """The spin count libgomp printed when it loaded (``OMP_DISPLAY_ENV``)."""
    lines = [line for line in stderr.splitlines() if line.strip().startswith("GOMP_SPINCOUNT")]
    assert len(lines) == 1, stderr
    return int(lines[0].split("=", 1)[1].strip().strip("'"))


def test_torch_loads_with_idle_threads_sleeping() -> None:
    result, stderr = _run()
    assert _spin_count(stderr) == 0
    assert result["chosen"] is True
    assert result["env"] is None  # put back: children started later see their own environment


@pytest.mark.parametrize("given", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}])
def test_the_environment_chooses(given: dict[str, str]) -> None:
    result, stderr = _run(**given)
    assert result["chosen"] is False
    assert "environment" in str(result["reason"])
    if "OMP_WAIT_POLICY" in given:
        assert _spin_count(stderr) > 300_000  # libgomp's ACTIVE: spin (almost) forever
        assert result["env"] == "ACTIVE"
    else:
        assert _spin_count(stderr) == 1000
        assert result["env"] is None


def test_torch_imported_first_keeps_its_policy() -> None:
    result, stderr = _run(before="import torch")
    assert result["chosen"] is False
    assert "before the plugin" in str(result["reason"])
    assert _spin_count(stderr) == 300_000  # libgomp's default
