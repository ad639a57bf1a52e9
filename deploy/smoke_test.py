"""Start a server command, answer one request per named model over HTTP and gRPC, stop it.

A check of an installation (an image's venv, a wheel install) as a user would make it, with the
real ``tritonclient`` (run this file with a Python that has ``tritonclient[grpc,http]``; the
server's own environment needs none)::

    python deploy/smoke_test.py --model onnx_add_sub -- /opt/kernel/bin/kernel serve

The command gets ``--host 127.0.0.1`` and free ports appended; the ports are read from the
server's log. Inputs are made from each model's metadata (input i filled with i + 2; a batch
of one); the answer must hold every declared output with its declared datatype, and for
``*add_sub`` models the first output must be the sum of the two inputs and the second their
difference. Then SIGTERM: the server must exit 0.
Exit status 0 when everything held; the reason otherwise. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

_FREE_PORTS = ("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0")
_STARTED = re.compile(r"started (\w+) endpoint at ([\w.:-]+):(\d+)")


class _Server:
    """The command, its log drained by a thread (a full pipe would stall the server)."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", *_FREE_PORTS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = _STARTED.search(line)
            if found:
                self.ports[found.group(1)] = int(found.group(3))

    def wait_for_ports(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if {"http", "grpc"} <= set(self.ports):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"the server did not start its endpoints:\n{self.log()}")

    def log(self) -> str:
        return "".join(self.lines[-60:])

    def stop(self, timeout: float) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise SystemExit(f"the server did not exit within {timeout} s of SIGTERM") from None
        finally:
            self._reader.join(timeout=5)


def _inputs(module: Any, metadata: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    from tritonclient.utils import triton_to_np_dtype

    inputs, arrays = [], {}
    for index, spec in enumerate(metadata["inputs"]):
        shape = [1 if d == -1 else d for d in spec["shape"]]
        if spec["datatype"] == "BYTES":
            array = np.full(shape, b"kernel", dtype=np.object_)
        else:
            # 2, 3, ...: distinct per input, so a sum and a difference tell them apart
            array = np.full(shape, index + 2, dtype=triton_to_np_dtype(spec["datatype"]))
        item = module.InferInput(spec["name"], shape, spec["datatype"])
        item.set_data_from_numpy(array)
        inputs.append(item)
        arrays[spec["name"]] = array
    return inputs, arrays


def _check_model(protocol: str, url: str, model: str, timeout: float) -> None:
    if protocol == "http":
        import tritonclient.http as module

        client: Any = module.InferenceServerClient(
            url, connection_timeout=timeout, network_timeout=timeout
        )
        metadata = client.get_model_metadata(model)
        options: dict[str, Any] = {}
    else:
        import tritonclient.grpc as module

        client = module.InferenceServerClient(url)
        metadata = client.get_model_metadata(model, as_json=True)
        for spec in metadata["inputs"] + metadata["outputs"]:
            spec["shape"] = [int(d) for d in spec["shape"]]
        options = {"client_timeout": timeout}
    try:
        inputs, arrays = _inputs(module, metadata)
        result = client.infer(model, inputs, **options)
        for spec in metadata["outputs"]:
            array = result.as_numpy(spec["name"])
            if array is None:
                raise SystemExit(f"{model} ({protocol}): no output {spec['name']}")
            got = result.get_output(spec["name"])
            datatype = got["datatype"] if isinstance(got, dict) else got.datatype
            if datatype != spec["datatype"]:
                raise SystemExit(f"{model} ({protocol}): {spec['name']} is {datatype}")
        if model.endswith("add_sub"):
            a, b = (arrays[spec["name"]] for spec in metadata["inputs"])
            total, difference = (result.as_numpy(spec["name"]) for spec in metadata["outputs"])
            if not (np.array_equal(total, a + b) and np.array_equal(difference, a - b)):
                raise SystemExit(f"{model} ({protocol}): wrong sum or difference")
    finally:
        client.close()
    print(f"{model}: answered over {protocol}")


def _wait_ready(url: str, models: list[str], timeout: float) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, connection_timeout=5)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if client.is_server_live() and all(client.is_model_ready(m) for m in models):
                    return
            except Exception:  # not accepting yet
                pass
            time.sleep(0.25)
    finally:
        client.close()
    raise SystemExit(f"models {models} not ready within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="a model to infer")
    parser.add_argument("--timeout", type=float, default=120.0, help="per wait, seconds")
    parser.add_argument("command", nargs="+", help="the server command, e.g. kernel serve")
    args = parser.parse_args(argv)
    server = _Server(args.command)
    try:
        server.wait_for_ports(args.timeout)
        _wait_ready(f"127.0.0.1:{server.ports['http']}", args.model, args.timeout)
        for model in args.model:
            _check_model("http", f"127.0.0.1:{server.ports['http']}", model, args.timeout)
            _check_model("grpc", f"127.0.0.1:{server.ports['grpc']}", model, args.timeout)
    except BaseException:
        server.stop(timeout=args.timeout)
        sys.stderr.write(server.log())
        raise
    status = server.stop(timeout=args.timeout)
    if status != 0:
        sys.stderr.write(server.log())
        raise SystemExit(f"the server exited with status {status} after SIGTERM")
    print("server stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
