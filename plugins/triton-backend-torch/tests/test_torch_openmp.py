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
from pathlib import Path

import numpy as np
import pytest
import torch

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


_FORWARD = """
import sys
import numpy as np
import triton_backend_torch  # first: torch loads with the plugin's policy
import torch
module = torch.jit.load(sys.argv[1])
with torch.inference_mode():
    np.save(sys.argv[3], module(torch.from_numpy(np.load(sys.argv[2]))).numpy())
"""


def test_answers_do_not_depend_on_how_threads_wait(tmp_path: Path) -> None:
    """A conv net whose operators run in parallel regions gives the same answer with idle
    threads sleeping (a fresh process importing the plugin first) as with libgomp's spinning
    (this process, where torch loaded before the plugin)."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 8, 3, stride=2, padding=1),
    ).eval()
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(module, x)
        expected = traced(x).numpy()
    traced.save(str(tmp_path / "model.pt"))
    np.save(tmp_path / "x.npy", x.numpy())
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run(
        [sys.executable, "-c", _FORWARD, str(tmp_path / "model.pt"), str(tmp_path / "x.npy"),
         str(tmp_path / "y.npy")],
        env={**clean, "OMP_DISPLAY_ENV": "VERBOSE"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )  # fmt: skip
    assert _spin_count(done.stderr) == 0
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6, atol=1e-6)
