"""``kernel --help`` and ``kernel backends`` start without the server stack or any framework.

Checked on the modules a fresh interpreter holds after running the command (no timing asserts:
the figures are in docs/deploy.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import kernel

_PROBE = """
import json, sys
from kernel._cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""

# The server stack and anything heavy it or a backend would pull in.
_HEAVY = (
    "anyio",
    "numpy",
    "uvloop",
    "httptools",
    "betterproto2",
    "google.protobuf",
    "kernel._server",
    "kernel._backend",
    "kernel._registry",
    "kernel._proto",
    "kernel.frontends",
    "onnxruntime",
    "torch",
    "openvino",
    "xgboost",
    "lightgbm",
    "triton_backend_onnx",
    "triton_backend_torch",
    "triton_backend_openvino",
    "triton_backend_fil",
    "triton_backend_python",
)


def _modules_after(*args: str) -> tuple[str, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60
    )
    marker = out.stderr.rindex("MODULES ")
    return out.stdout, set(json.loads(out.stderr[marker + len("MODULES ") :]))


@pytest.mark.parametrize("args", [["--help"], ["backends"], ["serve", "--help"]])
def test_command_imports_nothing_heavy(args: list[str]) -> None:
    stdout, modules = _modules_after(*args)
    assert stdout.strip(), "the command printed nothing"
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in _HEAVY))
    assert heavy == []


def test_backends_lists_from_metadata_without_importing() -> None:
    stdout, modules = _modules_after("backends")
    assert "| onnxruntime " in stdout and "triton_backend_onnx:OnnxRuntimeBackend" in stdout
    assert "kernel_test_backends" not in modules


def test_package_exports_load_on_first_use() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, kernel; assert 'kernel._server' not in sys.modules;"
            " s = kernel.InferenceServer; assert 'kernel._server' in sys.modules;"
            " print(s.__module__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "kernel._server"
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = kernel.NoSuchName  # type: ignore[attr-defined]
    assert set(kernel.__all__) <= set(dir(kernel))
