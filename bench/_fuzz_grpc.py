"""Raw HTTP/2 and gRPC cases for bench/fuzz.py: frames built with ``hyperframe`` and ``hpack``
(so invalid ones can be sent), carrying valid or mutated gRPC messages (tritonclient's protobuf
classes), and the server's frames read back until every stream ended, a GOAWAY, or a close.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import hpack
from google.protobuf.message import DecodeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from tritonclient.grpc import service_pb2 as pb

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SERVICE = "/inference.GRPCInferenceService/"
EDGE_INTS = [0, 1, -1, 4, 16, 2**31 - 1, -(2**31), 2**62, -(2**63), 2**63 - 1]
DATATYPES = ["FP32", "INT32", "BYTES", "FP33", "", "BOOL", "FP16", "UINT64", "TYPE_FP32"]
NAMES = ["INPUT0", "INPUT1", "INPUT9", "", "IN", "\x00"]


def good_infer(model: str = "addsub") -> Any:
    request = pb.ModelInferRequest(model_name=model)
    for name in ("INPUT0", "INPUT1"):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[4])
        del tensor  # shape and datatype set; data below
        request.raw_input_contents.append(struct.pack("<4f", 1, 2, 3, 4))
    request.outputs.add(name="OUTPUT0")
    return request


def _param(rng: random.Random, target: Any) -> None:
    choice = rng.randrange(4)
    if choice == 0:
        target.bool_param = rng.random() < 0.5
    elif choice == 1:
        target.int64_param = rng.choice(EDGE_INTS)
    elif choice == 2:
        target.string_param = rng.choice(["", "x", "1", "-1", "99999999999999999999"])
    else:
        target.uint64_param = rng.choice([0, 1, 2**64 - 1])


def mutated_infer(rng: random.Random) -> Any:
    """A ModelInferRequest near a valid one: counts, shapes, datatypes, parameters, contents."""
    request = good_infer(
        rng.choice(["addsub", "addsub", "batched", "strings", "repeat", "nope", ""])
    )
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(12)
        if choice == 0:
            request.raw_input_contents.append(bytes(rng.choice([0, 3, 16, 17, 1000])))
        elif choice == 1 and request.raw_input_contents:
            request.raw_input_contents.pop()
        elif choice == 2 and request.inputs:
            tensor = request.inputs[rng.randrange(len(request.inputs))]
            del tensor.shape[:]
            tensor.shape.extend(rng.choice(EDGE_INTS) for _ in range(rng.randint(0, 4)))
        elif choice == 3 and request.inputs:
            request.inputs[rng.randrange(len(request.inputs))].datatype = rng.choice(DATATYPES)
        elif choice == 4 and request.inputs:
            request.inputs[rng.randrange(len(request.inputs))].name = rng.choice(NAMES)
        elif choice == 5:
            key = rng.choice(
                [
                    "priority",
                    "timeout",
                    "sequence_id",
                    "sequence_start",
                    "sequence_end",
                    "binary_data_output",
                    "triton_x",
                    "x",
                ]
            )
            _param(rng, request.parameters[key])
        elif choice == 6 and request.inputs:
            tensor = request.inputs[rng.randrange(len(request.inputs))]
            key = rng.choice(
                [
                    "shared_memory_region",
                    "shared_memory_byte_size",
                    "shared_memory_offset",
                    "binary_data_size",
                ]
            )
            _param(rng, tensor.parameters[key])
        elif choice == 7 and request.inputs:  # typed contents next to (or instead of) raw
            tensor = request.inputs[rng.randrange(len(request.inputs))]
            tensor.contents.fp32_contents.extend([1.0] * rng.choice([0, 3, 4, 5]))
            if rng.random() < 0.5:
                del request.raw_input_contents[:]
        elif choice == 8 and request.inputs:
            tensor = request.inputs[rng.randrange(len(request.inputs))]
            tensor.contents.bytes_contents.extend([b"a", b"\xff"])
        elif choice == 9:
            request.inputs.add(name=rng.choice(NAMES), datatype=rng.choice(DATATYPES), shape=[4])
        elif choice == 10:
            request.model_version = rng.choice(["1", "9", "-1", "x", "99999999999999999999"])
        else:
            request.outputs.add(name=rng.choice(["OUTPUT0", "OUTPUT9", ""]))
            _param(rng, request.outputs[-1].parameters["classification"])
    return request


def mutated_other(rng: random.Random) -> tuple[str, Any]:
    """A non-inference request with mutated fields."""
    choice = rng.randrange(8)
    model = rng.choice(["addsub", "victim", "nope", "", "..", "a/b", "x\x00"])
    if choice == 0:
        request = pb.RepositoryModelLoadRequest(model_name=model if model != "addsub" else "victim")
        if rng.random() < 0.5:
            request.parameters["config"].string_param = rng.choice(
                ['{"backend": "kerneltest"}', "{", "", '{"max_batch_size": -1}']
            )
        if rng.random() < 0.3:
            request.parameters[rng.choice(["file:1/x", "file:../x", "file:"])].bytes_param = b"x"
        return "RepositoryModelLoad", request
    if choice == 1:
        return "RepositoryModelUnload", pb.RepositoryModelUnloadRequest(
            model_name=model if model != "addsub" else "victim"
        )
    if choice == 2:
        return "SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest(
            name=rng.choice(["r", ""]),
            key=rng.choice(["nope", "", "..", "a/b", "/dev/null"]),
            offset=rng.choice([0, 1, 2**63]),
            byte_size=rng.choice([0, 1, 2**64 - 1]),
        )
    if choice == 3:
        return "SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterRequest(
            name=rng.choice(["r", ""])
        )
    if choice == 4:
        request = pb.LogSettingsRequest()
        key = rng.choice(["log_info", "log_verbose_level", "log_format", "log_file", "x"])
        value = request.settings[key]
        choice2 = rng.randrange(3)
        if choice2 == 0:
            value.bool_param = True
        elif choice2 == 1:
            value.uint32_param = rng.choice([0, 2**32 - 1])
        else:
            value.string_param = rng.choice(["default", "ISO8601", "x", "/tmp/kernel-fuzz-log"])
        return "LogSettings", request
    if choice == 5:
        request = pb.TraceSettingRequest(model_name=rng.choice(["", "addsub", "nope"]))
        key = rng.choice(
            ["trace_level", "trace_rate", "trace_count", "log_frequency", "trace_file"]
        )
        request.settings[key].value.extend(
            rng.choice([["TIMESTAMPS"], ["OFF", "TENSORS"], ["-1"], ["x"], [], ["1", "2"]])
        )
        return "TraceSetting", request
    if choice == 6:
        return "ModelMetadata", pb.ModelMetadataRequest(
            name=model, version=rng.choice(["", "1", "x"])
        )
    return "ModelStatistics", pb.ModelStatisticsRequest(name=model, version=rng.choice(["", "9"]))


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(3)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            del out[at : at + rng.randint(1, 8)]
    return bytes(out)


def grpc_message(rng: random.Random) -> tuple[str, bytes, str]:
    """(method, serialized message, label)."""
    if rng.random() < 0.6:
        method, message = "ModelInfer", mutated_infer(rng)
    else:
        method, message = mutated_other(rng)
    data = message.SerializeToString()
    label = f"{method}"
    if rng.random() < 0.2:
        data = _mutate_bytes(data, rng)
        label += "+bytes"
    return method, data, label


# -- frames --------------------------------------------------------------------------------------


def _headers(method: str, rng: random.Random, mutate: bool) -> list[tuple[str, str]]:
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", SERVICE + method),
        (":authority", "fuzz"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    if not mutate:
        return headers
    choice = rng.randrange(10)
    if choice == 0:
        headers = [h for h in headers if h[0] != rng.choice([h[0] for h in headers])]
    elif choice == 1:
        headers.append(("grpc-timeout", rng.choice(["1n", "0S", "99999999H", "x", "-1m", "1"])))
    elif choice == 2:
        headers.append(("grpc-encoding", rng.choice(["gzip", "deflate", "br", "x"])))
    elif choice == 3:
        headers = [(n, "text/plain") if n == "content-type" else (n, v) for n, v in headers]
    elif choice == 4:
        headers = [(n, "x") if n == "te" else (n, v) for n, v in headers]
    elif choice == 5:
        headers.extend((f"x-f{i}", "v") for i in range(rng.choice([100, 2000])))
    elif choice == 6:
        headers.append(("x-big", "v" * rng.choice([10000, 100000])))
    elif choice == 7:
        headers = [
            (":path", rng.choice(["/x", "", "/inference.GRPCInferenceService/Nope"]))
            if n == ":path"
            else (n, v)
            for n, v in headers
        ]
    elif choice == 8:
        headers.append(("Upper-Case", "x"))
        headers.append(("connection", "keep-alive"))
    else:
        headers.insert(0, ("x-before", "pseudo"))
    return headers


def _message_frame_payload(data: bytes, rng: random.Random, mutate: bool) -> bytes:
    flag, length = 0, len(data)
    if mutate:
        choice = rng.randrange(4)
        if choice == 0:
            flag = 1  # compressed without an encoding
        elif choice == 1:
            length += rng.choice([1, -1, 1000, 2**31])
            length = max(0, min(length, 2**32 - 1))
        elif choice == 2:
            flag = rng.randrange(2, 256)
    return struct.pack(">BI", flag, length) + data


def parses(method: str, data: bytes) -> bool:
    """Whether ``data`` is a valid message of the method's request type (protobuf's own parser)."""
    try:
        getattr(pb, method + "Request").FromString(data)
    except DecodeError:
        return False
    return True


def build_case(
    rng: random.Random,
) -> tuple[bytes, list[int], str, dict[int, tuple[str, bytes]]]:
    """The bytes to send, the stream ids opened, a label, and each stream's method and message."""
    encoder = hpack.Encoder()
    out = [PREFACE]
    settings = SettingsFrame(0)
    if rng.random() < 0.1:
        settings.settings = {
            rng.choice([1, 2, 3, 4, 5, 6, 0x99]): rng.choice([0, 1, 2**31, 2**32 - 1])
        }
    out.append(settings.serialize())
    streams: list[int] = []
    labels: list[str] = []
    messages: dict[int, tuple[str, bytes]] = {}
    stream_id = 1
    for _ in range(rng.choice([1, 1, 1, 2, 5])):
        method, data, label = grpc_message(rng)
        mutate_headers = rng.random() < 0.25
        mutate_prefix = rng.random() < 0.1
        labels.append(
            label + ("+headers" if mutate_headers else "") + ("+prefix" if mutate_prefix else "")
        )
        block = encoder.encode(_headers(method, rng, mutate_headers))
        headers = HeadersFrame(stream_id)
        headers.data = block
        headers.flags.add("END_HEADERS")
        out.append(headers.serialize())
        payload = _message_frame_payload(data, rng, mutate_prefix)
        split = rng.randint(1, max(1, len(payload))) if rng.random() < 0.3 else len(payload)
        first = DataFrame(stream_id)
        first.data = payload[:split]
        if split >= len(payload):
            first.flags.add("END_STREAM")
        out.append(first.serialize())
        if split < len(payload):
            second = DataFrame(stream_id)
            second.data = payload[split:]
            second.flags.add("END_STREAM")
            out.append(second.serialize())
        streams.append(stream_id)
        if not mutate_prefix:  # else the server reads other bytes than these
            messages[stream_id] = (method, data)
        stream_id += 2
    if rng.random() < 0.35:
        frames, label = _bad_frames(rng, stream_id, encoder)
        at = rng.randint(2, len(out))
        out[at:at] = frames
        labels.append(label)
        if label in ("data-after-end", "random-frame"):  # may land inside a request's frames
            messages.clear()
    if rng.random() < 0.05:
        raw = b"".join(out)
        return (
            PREFACE + _mutate_bytes(raw[len(PREFACE) :], rng),
            streams,
            "+".join([*labels, "bytes"]),
            {},  # the bytes changed: the messages as sent are unknown
        )
    return b"".join(out), streams, "+".join(labels), messages


def _raw_frame(
    kind: int, flags: int, stream: int, payload: bytes, length: int | None = None
) -> bytes:
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def _bad_frames(
    rng: random.Random, next_id: int, encoder: hpack.Encoder
) -> tuple[list[bytes], str]:
    """Frames a conforming client does not send (RFC 9113 violations, floods, odd ids)."""
    choice = rng.randrange(16)
    if choice == 0:
        frame = DataFrame(1)  # data on a stream already ended
        frame.data = b"x"
        return [frame.serialize()], "data-after-end"
    if choice == 1:
        return [_raw_frame(0, 0, 0, b"x")], "data-on-stream-0"
    if choice == 2:
        frame = WindowUpdateFrame(rng.choice([0, 1]))
        frame.window_increment = 0
        return [frame.serialize()], "window-update-0"
    if choice == 3:
        frames = []
        for _ in range(2):
            frame = WindowUpdateFrame(0)
            frame.window_increment = 2**31 - 1
            frames.append(frame.serialize())
        return frames, "window-overflow"
    if choice == 4:
        return [PingFrame(0).serialize() for _ in range(rng.choice([10, 2000]))], "ping-flood"
    if choice == 5:
        return [
            SettingsFrame(0).serialize() for _ in range(rng.choice([10, 2000]))
        ], "settings-flood"
    if choice == 6:  # rapid reset
        frames = []
        for i in range(rng.choice([10, 500])):
            sid = next_id + 2 * i
            headers = HeadersFrame(sid)
            headers.data = encoder.encode(
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", SERVICE + "ServerLive"),
                    (":authority", "f"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ]
            )
            headers.flags.add("END_HEADERS")
            frames.append(headers.serialize())
            rst = RstStreamFrame(sid)
            rst.error_code = 8
            frames.append(rst.serialize())
        return frames, "rapid-reset"
    if choice == 7:
        return [_raw_frame(9, 0, next_id, b"\x00" * 10)], "continuation-without-headers"
    if choice == 8:
        headers = HeadersFrame(next_id)
        headers.data = encoder.encode([(":method", "POST")])
        frames = [headers.serialize()]
        frames.extend(ContinuationFrame(next_id).serialize() for _ in range(rng.choice([10, 3000])))
        return frames, "continuation-flood"
    if choice == 9:
        headers = HeadersFrame(2)  # even id from a client
        headers.data = encoder.encode([(":method", "POST"), (":path", SERVICE + "ServerLive")])
        headers.flags.add("END_HEADERS")
        return [headers.serialize()], "even-stream-id"
    if choice == 10:
        return [
            _raw_frame(
                rng.randrange(256),
                rng.randrange(256),
                rng.randrange(2**31),
                bytes(rng.randrange(256) for _ in range(rng.randrange(40))),
            )
        ], "random-frame"
    if choice == 11:
        return [
            _raw_frame(
                rng.choice([3, 4, 6, 8]), 0, rng.choice([0, 1]), b"\x00" * rng.choice([0, 3, 5, 7])
            )
        ], "wrong-length"
    if choice == 12:
        return [
            _raw_frame(0, 0, next_id, b"") for _ in range(rng.choice([10, 3000]))
        ], "empty-data-flood"
    if choice == 13:
        frame = PriorityFrame(next_id)
        frame.depends_on = next_id  # depends on itself
        return [frame.serialize()], "self-priority"
    if choice == 14:
        headers = HeadersFrame(next_id)
        headers.data = b"\x3f\xe1\x1f" + bytes(
            rng.randrange(256) for _ in range(20)
        )  # table size update + junk
        headers.flags.add("END_HEADERS")
        return [headers.serialize()], "hpack-junk"
    frame = GoAwayFrame(0)
    frame.last_stream_id = 0
    return [frame.serialize()], "client-goaway"


# -- reading -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Stream id -> (grpc-status, grpc-message) from trailers (or trailers-only answers)."""
    reset: dict[int, int] = field(default_factory=dict)
    goaway: int | None = None
    http_status: dict[int, str] = field(default_factory=dict)
    closed: bool = False
    half_closed: bool = False
    """Nothing came for ``timeout`` seconds and the client sent its EOF."""
    hung: bool = False
    """Not even the client's EOF ended the exchange within ``close_timeout``."""


def exchange(
    port: int, data: bytes, streams: list[int], timeout: float = 5.0, close_timeout: float = 10.0
) -> Outcome:
    out = Outcome()
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 65536
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    buffer = bytearray()
    pending: dict[int, bytearray] = {}
    try:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        deadline = time.monotonic() + timeout
        while True:
            if out.goaway is not None or all(s in out.status or s in out.reset for s in streams):
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if out.half_closed:
                    out.hung = True
                    return out
                # Quiet: maybe it waits for bytes a mutation promised. After our EOF it must
                # answer or close.
                out.half_closed = True
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + close_timeout
                continue
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                out.closed = True
                return out
            if not chunk:
                out.closed = True
                return out
            buffer += chunk
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                kind, flags = buffer[3], buffer[4]
                sid = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload = bytes(buffer[9 : 9 + length])
                del buffer[: 9 + length]
                if kind == 0x7:
                    out.goaway = int.from_bytes(payload[4:8], "big")
                elif kind == 0x3:
                    out.reset[sid] = int.from_bytes(payload[:4], "big")
                elif kind in (0x1, 0x9):
                    block = pending.setdefault(sid, bytearray())
                    if kind == 0x1:
                        block.clear()
                        pad = payload[0] if flags & 0x8 else 0
                        start = (1 if flags & 0x8 else 0) + (5 if flags & 0x20 else 0)
                        payload = payload[start : len(payload) - pad]
                    block += payload
                    if flags & 0x4:  # END_HEADERS
                        fields = dict(decoder.decode(bytes(block), raw=False))
                        pending.pop(sid, None)
                        if ":status" in fields:
                            out.http_status[sid] = str(fields[":status"])
                        if "grpc-status" in fields:
                            out.status[sid] = (
                                str(fields["grpc-status"]),
                                str(fields.get("grpc-message", "")),
                            )
                        elif flags & 0x1 and fields.get(":status") not in (None, "200"):
                            out.status[sid] = ("http " + str(fields[":status"]), "")
                elif kind == 0x6 and not flags & 0x1:  # answer PINGs as a client must
                    pong = PingFrame(0)
                    pong.opaque_data = payload
                    pong.flags.add("ACK")
                    sock.sendall(pong.serialize())
                elif kind == 0x4 and not flags & 0x1:
                    ack = SettingsFrame(0)
                    ack.flags.add("ACK")
                    sock.sendall(ack.serialize())
    finally:
        sock.close()
