"""glibc's malloc keeps the pages of freed tensor-sized buffers once ``kernel serve`` tuned it,
and a user's own malloc settings are left alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kernel._malloc import MMAP_THRESHOLD, TRIM_THRESHOLD, tune_malloc

# A request's worth of buffers: DATA frames copied out and joined into one 196 KB message.
_CHURN = """
import resource, sys
from kernel._malloc import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc({})
chunks = [bytes(65536)] * 3
def request():
    return len(b"".join([bytes(memoryview(c)) for c in chunks]))
for _ in range(20):
    request()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(300):
    request()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* from the test run's environment
    done = subprocess.run(
        [sys.executable, "-c", _CHURN, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_large_buffers_keep_their_pages_once_tuned() -> None:
    untuned, tuned = _faults("plain"), _faults("tuned")
    # Untuned, every request maps and faults in its ~100 pages again; tuned, almost none.
    assert untuned > 300 * 20, untuned
    assert tuned < untuned / 10, (tuned, untuned)


def test_children_inherit_the_thresholds() -> None:
    env: dict[str, str] = {}
    tune_malloc(env)
    assert env == {
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    }


@pytest.mark.parametrize(
    "given",
    [
        {"MALLOC_MMAP_THRESHOLD_": "1048576"},
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"},
    ],
)
def test_a_users_malloc_settings_win(given: dict[str, str]) -> None:
    env = dict(given)
    assert tune_malloc(env) is False
    assert env == given
