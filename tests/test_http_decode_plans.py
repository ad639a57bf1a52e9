"""Decode plans: a binary request whose JSON header was seen before is decoded from the plan
that header made, and must come out exactly as a full decoding would (same request, same
errors), bounded in number."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from kernel_test_backends.configs import ADDSUB, STRINGS

from kernel._errors import KernelError
from kernel._inference import RequestFlags
from kernel.frontends._http._infer import BINARY, DecodePlans, InferCall, decode_request
from kernel.testing import RunningServer, ServerThread, write_model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root: Path = tmp_path_factory.mktemp("models")
    write_model(root, "addsub", ADDSUB)
    write_model(root, "strings", STRINGS)
    with ServerThread(root, grpc_port=None, metrics_port=None) as running:
        yield running


def fp32_body(
    a: np.ndarray, b: np.ndarray, extra: dict[str, Any] | None = None
) -> tuple[memoryview, int]:
    """A binary request body for ``addsub`` and its header length."""
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": f"INPUT{i}",
                "datatype": "FP32",
                "shape": [4],
                "parameters": {"binary_data_size": 16},
            }
            for i in (0, 1)
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        **(extra or {}),
    }
    text = json.dumps(header).encode()
    data = a.astype(np.float32).tobytes() + b.astype(np.float32).tobytes()
    return memoryview(text + data), len(text)


def decode(
    server: RunningServer,
    model: str,
    body: memoryview,
    length: int,
    plans: DecodePlans | None,
) -> InferCall:
    return decode_request(server.server, model, "", body, length, plans)


def error_of(
    server: RunningServer, model: str, body: memoryview, length: int, plans: DecodePlans | None
) -> str:
    with pytest.raises(KernelError) as info:
        decode(server, model, body, length, plans)
    return info.value.message


def test_a_repeated_header_is_decoded_from_its_plan(server: RunningServer) -> None:
    plans = DecodePlans()
    first, length = fp32_body(np.arange(4), np.ones(4))
    call = decode(server, "addsub", first, length, plans)
    assert len(plans) == 1
    second, _ = fp32_body(np.arange(4) * 10, np.full(4, 7))
    planned = decode(server, "addsub", second, length, plans)
    full = decode(server, "addsub", second, length, None)
    assert len(plans) == 1
    assert list(planned.request.inputs) == list(full.request.inputs) == ["INPUT0", "INPUT1"]
    for name, array in full.request.inputs.items():
        np.testing.assert_array_equal(planned.request.inputs[name], array)
        assert planned.request.inputs[name].dtype == array.dtype
        assert not planned.request.inputs[name].flags.writeable
    np.testing.assert_array_equal(planned.request.inputs["INPUT0"], np.arange(4) * 10)
    assert planned.request.requested_output_names == call.request.requested_output_names
    assert planned.outputs["OUTPUT0"].kind == BINARY
    assert planned.default_kind == full.default_kind
    assert planned.target is full.target


def test_request_parameters_come_back_from_a_plan_unshared(server: RunningServer) -> None:
    plans = DecodePlans()
    extra = {"parameters": {"sequence_id": 9, "sequence_start": True, "custom": "x"}}
    body, length = fp32_body(np.zeros(4), np.zeros(4), extra)
    decode(server, "addsub", body, length, plans)
    planned = decode(server, "addsub", body, length, plans)
    assert len(plans) == 1
    assert planned.request.correlation_id == 9
    assert planned.request.flags == RequestFlags.SEQUENCE_START
    assert planned.request.parameters == {"custom": "x"}
    planned.request.parameters["forwarded"] = "y"  # header forwarding writes here
    again = decode(server, "addsub", body, length, plans)
    assert again.request.parameters == {"custom": "x"}


def test_a_planned_header_with_another_body_length_fails_as_without_plan(
    server: RunningServer,
) -> None:
    plans = DecodePlans()
    body, length = fp32_body(np.zeros(4), np.zeros(4))
    decode(server, "addsub", body, length, plans)
    for bad in (memoryview(bytes(body) + b"xx"), body[:-4]):
        assert error_of(server, "addsub", bad, length, plans) == error_of(
            server, "addsub", bad, length, None
        )


def strings_body(payload: bytes, size: int | None = None) -> tuple[memoryview, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(payload) if size is None else size},
                }
            ]
        }
    ).encode()
    return memoryview(header + payload), len(header)


def test_bytes_inputs_are_checked_on_every_planned_request(server: RunningServer) -> None:
    plans = DecodePlans()
    good = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 2) + b"de"
    body, length = strings_body(good)
    decode(server, "strings", body, length, plans)
    assert len(plans) == 1
    planned = decode(server, "strings", body, length, plans)
    assert planned.request.inputs["INPUT0"].tolist() == [b"abc", b"de"]
    # same header (same size), a payload that does not hold two strings
    bad = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 9) + b"de"
    body, length = strings_body(bad)
    message = error_of(server, "strings", body, length, plans)
    assert message == error_of(server, "strings", body, length, None)
    assert "incomplete string data" in message


def test_requests_with_an_id_or_json_data_make_no_plan(server: RunningServer) -> None:
    plans = DecodePlans()
    body, length = fp32_body(np.zeros(4), np.zeros(4), {"id": "r-1"})
    decode(server, "addsub", body, length, plans)
    decode(server, "addsub", body, length, plans)
    header = json.dumps(
        {
            "inputs": [
                {"name": f"INPUT{i}", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}
                for i in (0, 1)
            ]
        }
    ).encode()
    decode(server, "addsub", memoryview(header), len(header), plans)
    assert len(plans) == 0


def test_a_bad_request_makes_no_plan(server: RunningServer) -> None:
    plans = DecodePlans()
    body, length = fp32_body(np.zeros(4), np.zeros(4))
    error_of(server, "addsub", body[:-1], length, plans)
    assert len(plans) == 0


def test_plans_are_bounded(server: RunningServer) -> None:
    plans = DecodePlans()
    for n in range(DecodePlans.MAX_PLANS + 20):
        body, length = fp32_body(np.zeros(4), np.zeros(4), {"parameters": {"n": n}})
        decode(server, "addsub", body, length, plans)
    assert len(plans) == DecodePlans.MAX_PLANS
    big = {"parameters": {"pad": "x" * DecodePlans.MAX_HEADER}}
    body, length = fp32_body(np.zeros(4), np.zeros(4), big)
    fresh = DecodePlans()
    decode(server, "addsub", body, length, fresh)
    assert len(fresh) == 0


def test_tritonclient_repeats_through_plans(server: RunningServer) -> None:
    with httpclient.InferenceServerClient(server.http_url) as client:
        for n in range(5):
            a = np.arange(4, dtype=np.float32) + n
            b = np.full(4, n, dtype=np.float32)
            inputs = []
            for name, value in (("INPUT0", a), ("INPUT1", b)):
                tensor = httpclient.InferInput(name, [4], "FP32")
                tensor.set_data_from_numpy(value, binary_data=True)
                inputs.append(tensor)
            outputs = [httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
            result = client.infer("addsub", inputs, outputs=outputs)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
            assert result.as_numpy("OUTPUT0") is None
