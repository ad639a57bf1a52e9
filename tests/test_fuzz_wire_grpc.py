"""Black-box property tests of the gRPC endpoint over real sockets: random and mutated protobuf
messages sent with grpcio (tritonclient's generated messages, or their bytes mutated).

Every call must end (no hang) with a status, no client mistake may be answered UNKNOWN, INTERNAL
or DATA_LOSS (exceptions kept on purpose: a system shared-memory key that does not exist,
Triton's "Unable to open shared memory region: '<key>'"; and bytes that are not a protobuf
message at all, which gRPC servers (grpc C++ in Triton, grpc-go) answer INTERNAL), and the next
good request must be answered right. Nothing sent may create a file.

Examples per property: ``KERNEL_FUZZ_EXAMPLES`` (small and derandomized in the suite; large and
random under ``bench/fuzz.py``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_test_backends.configs import ADDSUB, BATCHED, REPEAT, STRINGS
from tritonclient.grpc import service_pb2 as pb

from kernel import ModelControlMode
from kernel.testing import ServerThread, write_model

VICTIM = "victim"  # the only model load/unload fuzzing may change
SERVICE = "/inference.GRPCInferenceService/"
TIMEOUT = 20.0
FAULTS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}


def fuzz_settings(default: int = 20) -> settings:
    """Bounded and derandomized in the suite (a failure reproduces); random in a long run."""
    long_run = "KERNEL_FUZZ_EXAMPLES" in os.environ
    return settings(
        max_examples=int(os.environ.get("KERNEL_FUZZ_EXAMPLES", default)),
        deadline=None,
        derandomize=not long_run,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@dataclass(frozen=True, slots=True)
class Fixture:
    channel: grpc.Channel
    canary: Path


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    root = tmp_path_factory.mktemp("models")
    canary = tmp_path_factory.mktemp("canary")
    models = {"addsub": ADDSUB, "batched": BATCHED, "strings": STRINGS, "repeat": REPEAT}
    for name, config in {**models, VICTIM: ADDSUB}.items():
        write_model(root, name, config)
    with ServerThread(
        root,
        http_port=None,
        metrics_port=None,
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=[*models, VICTIM],
    ) as running:
        channel = grpc.insecure_channel(running.grpc_url)
        try:
            yield Fixture(channel, canary)
        finally:
            channel.close()
        assert list(canary.iterdir()) == [], "a request over gRPC created a file"


def call(srv: Fixture, method: str, data: bytes) -> tuple[grpc.StatusCode, str, bytes]:
    """A unary call with raw bytes in and out; a call that does not end in time fails."""
    stub = srv.channel.unary_unary(SERVICE + method)
    try:
        reply = stub(data, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        code = exc.code()
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} hung: {data[:200]!r}"
        return code, exc.details() or "", b""
    return grpc.StatusCode.OK, "", reply


def good_infer() -> Any:
    request = pb.ModelInferRequest(model_name="addsub")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[4])
        request.raw_input_contents.append(struct.pack("<4f", 1, 2, 3, 4))
    return request


def still_serving(srv: Fixture) -> None:
    code, details, reply = call(srv, "ModelInfer", good_infer().SerializeToString())
    assert code == grpc.StatusCode.OK, details
    response = pb.ModelInferResponse.FromString(reply)
    assert struct.unpack("<4f", response.raw_output_contents[0]) == (2, 4, 6, 8)


def _parses(message_type: Any, data: bytes) -> bool:
    try:
        message_type.FromString(data)
    except DecodeError:
        return False
    return True


def exchange(srv: Fixture, method: str, message_type: Any, data: bytes) -> None:
    code, details, _ = call(srv, method, data)
    if code in FAULTS:
        allowed = details.startswith("Unable to open shared memory region: '") or (
            code == grpc.StatusCode.INTERNAL and not _parses(message_type, data)
        )
        assert allowed, f"{method} {data[:300]!r}: {code.name} {details!r}"
    still_serving(srv)
    assert list(srv.canary.iterdir()) == [], f"{method} {data[:300]!r} created a file"


# -- strategies ----------------------------------------------------------------------------------

INT64 = st.one_of(
    st.sampled_from([0, 1, 4, -1, -4, 2**31, 2**32, 2**63 - 1, -(2**63)]),
    st.integers(-(2**63), 2**63 - 1),
)
DATATYPES = st.sampled_from(["FP32", "INT32", "BYTES", "BOOL", "FP16", "UINT64", "FP33", "", "x"])
NAMES = st.sampled_from(["INPUT0", "INPUT1", "INPUT9", "IN", ""]) | st.text(max_size=8)
KEYS = st.sampled_from(
    [
        "priority",
        "timeout",
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "binary_data_output",
        "shared_memory_region",
        "shared_memory_byte_size",
        "shared_memory_offset",
        "classification",
        "triton_x",
        "x",
    ]
)


@st.composite
def parameters(draw: st.DrawFn, target: Any) -> None:
    for key in draw(st.lists(KEYS, max_size=3)):
        param = target[key]
        kind = draw(st.integers(0, 4))
        if kind == 0:
            param.bool_param = draw(st.booleans())
        elif kind == 1:
            param.int64_param = draw(INT64)
        elif kind == 2:
            param.string_param = draw(st.text(max_size=8))
        elif kind == 3:
            param.uint64_param = draw(st.integers(0, 2**64 - 1))
        else:
            param.double_param = draw(st.floats(allow_nan=False))


@st.composite
def infer_requests(draw: st.DrawFn) -> bytes:
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["addsub", "batched", "strings", "repeat", "nope", ""])),
        model_version=draw(st.sampled_from(["", "1", "9", "x", "-1"])),
        id=draw(st.text(max_size=6)),
    )
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(NAMES),
            datatype=draw(DATATYPES),
            shape=draw(st.lists(INT64, max_size=4)),
        )
        draw(parameters(tensor.parameters))
        typed = draw(st.integers(0, 5))
        if typed == 0:
            tensor.contents.fp32_contents.extend(
                draw(st.lists(st.floats(width=32, allow_nan=False), max_size=6))
            )
        elif typed == 1:
            tensor.contents.int_contents.extend(
                draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6))
            )
        elif typed == 2:
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=6), max_size=4)))
    request.raw_input_contents.extend(
        draw(
            st.lists(
                st.one_of(st.binary(max_size=24), st.just(struct.pack("<4f", 1, 2, 3, 4))),
                max_size=4,
            )
        )
    )
    for _ in range(draw(st.integers(0, 2))):
        output = request.outputs.add(name=draw(st.sampled_from(["OUTPUT0", "OUTPUT1", "X", ""])))
        draw(parameters(output.parameters))
    draw(parameters(request.parameters))
    return request.SerializeToString()


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 2))
        at = draw(st.integers(0, len(out)))
        if op == 0 and out:
            out[min(at, len(out) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            out[at:at] = draw(st.binary(min_size=1, max_size=6))
        else:
            del out[at : at + draw(st.integers(1, 6))]
    return bytes(out)


# -- properties ----------------------------------------------------------------------------------


@fuzz_settings()
@given(data=infer_requests())
def test_model_infer(srv: Fixture, data: bytes) -> None:
    exchange(srv, "ModelInfer", pb.ModelInferRequest, data)


@fuzz_settings()
@given(extra=st.integers(-2, 3).filter(bool), size=st.sampled_from([0, 4, 16]))
def test_raw_contents_count(srv: Fixture, extra: int, size: int) -> None:
    """raw_input_contents must pair one to one with the inputs (Triton refuses any other count)."""
    request = good_infer()
    if extra > 0:
        request.raw_input_contents.extend([bytes(size)] * extra)
    else:
        del request.raw_input_contents[extra:]
    code, details, _ = call(srv, "ModelInfer", request.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (extra, code, details)
    still_serving(srv)


@fuzz_settings()
@given(data=st.data())
def test_mutated_model_infer(srv: Fixture, data: st.DataObject) -> None:
    good = good_infer()
    good.outputs.add(name="OUTPUT1")
    raw = data.draw(mutated(good.SerializeToString()))
    exchange(srv, "ModelInfer", pb.ModelInferRequest, raw)


@fuzz_settings(10)
@given(messages=st.lists(infer_requests(), min_size=1, max_size=3))
def test_stream_infer(srv: Fixture, messages: list[bytes]) -> None:
    """ModelStreamInfer: errors come back in-stream (``error_message``), never as a fault."""
    stub = srv.channel.stream_stream(SERVICE + "ModelStreamInfer")
    try:
        for _ in stub(iter(messages), timeout=TIMEOUT):
            pass
    except grpc.RpcError as exc:
        code = exc.code()
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"stream hung: {messages!r}"
        assert code not in FAULTS, f"{messages!r}: {code.name} {exc.details()!r}"
    still_serving(srv)


@fuzz_settings()
@given(
    name=st.sampled_from([VICTIM, "nope", "..", "../x", "a/b", "x\x00", ""]) | st.text(max_size=8),
    load=st.booleans(),
    config=st.one_of(
        st.none(),
        st.sampled_from(['{"backend": "kerneltest"}', "{", "", '{"max_batch_size": -1}', "[]"]),
        st.text(max_size=20),
    ),
    files=st.dictionaries(
        st.sampled_from(["file:1/x", "file:../escape", "file:/abs", "file:", "file:1/../../e"]),
        st.binary(max_size=8),
        max_size=2,
    ),
)
def test_repository(
    srv: Fixture, name: str, load: bool, config: str | None, files: dict[str, bytes]
) -> None:
    if name == "addsub":
        return
    if not load:
        data = pb.RepositoryModelUnloadRequest(model_name=name).SerializeToString()
        exchange(srv, "RepositoryModelUnload", pb.RepositoryModelUnloadRequest, data)
        return
    request = pb.RepositoryModelLoadRequest(model_name=name)
    if config is not None:
        request.parameters["config"].string_param = config
    for key, content in files.items():
        request.parameters[key].bytes_param = content
    exchange(srv, "RepositoryModelLoad", pb.RepositoryModelLoadRequest, request.SerializeToString())


@fuzz_settings()
@given(
    name=st.sampled_from(["r", "", "r%00"]),
    key=st.sampled_from(["nope", "", "..", ".", "a/b", "/dev/null", "x\x00y"])
    | st.text(max_size=8),
    offset=st.integers(0, 2**64 - 1),
    byte_size=st.integers(0, 2**64 - 1),
    action=st.sampled_from(["register", "status", "unregister"]),
)
def test_shared_memory(
    srv: Fixture, name: str, key: str, offset: int, byte_size: int, action: str
) -> None:
    if action == "register":
        message: Any = pb.SystemSharedMemoryRegisterRequest(
            name=name, key=key, offset=offset, byte_size=byte_size
        )
        exchange(
            srv,
            "SystemSharedMemoryRegister",
            pb.SystemSharedMemoryRegisterRequest,
            message.SerializeToString(),
        )
    elif action == "status":
        message = pb.SystemSharedMemoryStatusRequest(name=name)
        exchange(
            srv,
            "SystemSharedMemoryStatus",
            pb.SystemSharedMemoryStatusRequest,
            message.SerializeToString(),
        )
    call(srv, "SystemSharedMemoryUnregister", b"")


@fuzz_settings()
@given(
    log=st.booleans(),
    key=st.sampled_from(
        [
            "log_info",
            "log_warning",
            "log_error",
            "log_verbose_level",
            "log_format",
            "log_file",
            "trace_level",
            "trace_rate",
            "trace_count",
            "log_frequency",
            "trace_file",
            "x",
        ]
    ),
    kind=st.integers(0, 3),
    text=st.sampled_from(
        ["default", "ISO8601", "TIMESTAMPS", "OFF", "-1", "99999999999", "x", "CANARY"]
    ),
    number=st.integers(0, 2**32 - 1),
    model=st.sampled_from(["", "addsub", "nope"]),
)
def test_settings(
    srv: Fixture, log: bool, key: str, kind: int, text: str, number: int, model: str
) -> None:
    if text == "CANARY":
        text = str(srv.canary / f"{key}.txt")
    if log:
        request: Any = pb.LogSettingsRequest()
        value = request.settings[key]
        if kind == 0:
            value.bool_param = True
        elif kind == 1:  # a verbose level would flood the suite's log: keep it 0
            value.uint32_param = 0 if key == "log_verbose_level" else number
        else:
            value.string_param = text
        exchange(srv, "LogSettings", pb.LogSettingsRequest, request.SerializeToString())
    else:
        request = pb.TraceSettingRequest(model_name=model)
        if kind:
            request.settings[key].value.extend([text] * kind)
        else:
            request.settings[key].SetInParent()
        exchange(srv, "TraceSetting", pb.TraceSettingRequest, request.SerializeToString())


@fuzz_settings()
@given(
    method=st.sampled_from(
        [
            "ModelInfer",
            "ModelMetadata",
            "ModelConfig",
            "ModelReady",
            "RepositoryIndex",
            "ServerMetadata",
        ]
    ),
    data=st.binary(max_size=60),
)
def test_random_bytes(srv: Fixture, method: str, data: bytes) -> None:
    types = {
        "ModelInfer": pb.ModelInferRequest,
        "ModelMetadata": pb.ModelMetadataRequest,
        "ModelConfig": pb.ModelConfigRequest,
        "ModelReady": pb.ModelReadyRequest,
        "RepositoryIndex": pb.RepositoryIndexRequest,
        "ServerMetadata": pb.ServerMetadataRequest,
    }
    exchange(srv, method, types[method], data)


@fuzz_settings(10)
@given(
    log=st.booleans(),
    key=st.sampled_from(
        ["log_info", "log_verbose_level", "log_format", "trace_level", "trace_rate", "x"]
    ),
)
def test_settings_entry_without_value(srv: Fixture, log: bool, key: str) -> None:
    """A map entry with a key and no value is valid protobuf (the value is the empty message)."""
    name = key.encode()
    entry = b"\n" + bytes([len(name)]) + name
    data = b"\n" + bytes([len(entry)]) + entry
    if log:
        exchange(srv, "LogSettings", pb.LogSettingsRequest, data)
    else:
        exchange(srv, "TraceSetting", pb.TraceSettingRequest, data)
