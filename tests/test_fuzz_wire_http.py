"""Black-box property tests of the HTTP endpoint over real sockets: random and mutated v2 bodies.

Every answer must be well-formed (JSON errors as ``{"error": "..."}``, a Content-Length that
matches), no client mistake may be answered with a server fault (5xx other than 501/503; the one
exception kept on purpose is a system shared-memory key that does not exist: 500 "Unable to open
shared memory region: '<key>'"), and the server must answer the next good request. Nothing sent
may create a file (``log_file`` and ``trace_file`` are refused over the network).

Examples per property: ``KERNEL_FUZZ_EXAMPLES`` (small and derandomized in the suite; large and
random under ``bench/fuzz.py``).
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import re
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_test_backends.configs import ADDSUB, BATCHED, STRINGS

from kernel import ModelControlMode
from kernel.testing import RunningServer, ServerThread, write_model

VICTIM = "victim"  # the only model load/unload fuzzing may change
MAX_BODY = 64 * 1024
TIMEOUT = 20.0


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
    running: RunningServer
    canary: Path
    """A folder the requests name as ``log_file``/``trace_file``: it must stay empty."""
    shm_key: str
    """A real 64-byte POSIX shared-memory object, for registrations with wrong offsets/sizes."""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    root = tmp_path_factory.mktemp("models")
    canary = tmp_path_factory.mktemp("canary")
    for name, config in (("addsub", ADDSUB), ("batched", BATCHED), ("strings", STRINGS)):
        write_model(root, name, config)
    write_model(root, VICTIM, ADDSUB)
    shm_key = f"kernel-fuzz-{uuid.uuid4().hex[:12]}"
    shm_path = Path("/dev/shm") / shm_key
    shm_path.write_bytes(bytes(64))
    try:
        with ServerThread(
            root,
            grpc_port=None,
            metrics_port=None,
            http_max_input_bytes=MAX_BODY,
            model_control_mode=ModelControlMode.EXPLICIT,
            load_models=["addsub", "batched", "strings", VICTIM],
        ) as running:
            yield Fixture(running, canary, shm_key)
            assert list(canary.iterdir()) == [], "a request over HTTP created a file"
    finally:
        shm_path.unlink(missing_ok=True)


# -- sending and the invariant -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def send(
    srv: Fixture,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request on a fresh connection; no answer within ``TIMEOUT`` fails (a hang)."""
    host, port = srv.running.http_url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        encoding = headers.get("content-encoding", "")
        if encoding in ("gzip", "deflate") and raw:  # the body as the server meant it
            raw = zlib.decompress(raw, 47 if encoding == "gzip" else 15)
            headers.pop("content-length", None)
        return Answer(response.status, headers, raw)
    finally:
        conn.close()


# Triton's wording for the one 500 a client may cause on purpose.
_SHM_OPEN = re.compile(r"Unable to open shared memory region: '")


def check(answer: Answer, what: str, method: str = "") -> Any:
    """A well-formed answer and no server fault for a client's mistake; returns the JSON body."""
    parsed: Any = None
    is_json = "json" in answer.headers.get("content-type", "")
    if answer.body and (is_json or answer.status >= 400):  # errors are JSON whatever the type
        try:
            parsed = json.loads(answer.body)
        except ValueError:
            raise AssertionError(f"{what}: answer is not JSON: {answer.body[:200]!r}") from None
    if answer.status >= 400 and method != "HEAD":
        assert isinstance(parsed, dict), f"{what}: {answer.status} {answer.body[:200]!r}"
        assert isinstance(parsed.get("error"), str), f"{what}: {parsed!r}"
    if answer.status >= 500 and answer.status not in (501, 503):
        if answer.status == 500 and _SHM_OPEN.match(parsed["error"]):
            return parsed
        raise AssertionError(f"{what}: answered {answer.status} {answer.body[:300]!r}")
    if "content-length" in answer.headers and method != "HEAD":
        assert int(answer.headers["content-length"]) == len(answer.body), what
    return parsed


GOOD = [
    {"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
    {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [1, 1, 1, 1]},
]


def still_serving(srv: Fixture) -> None:
    answer = send(srv, "POST", "/v2/models/addsub/infer", json.dumps({"inputs": GOOD}).encode())
    assert answer.status == 200, answer
    assert json.loads(answer.body)["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]


def exchange(
    srv: Fixture,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    what = f"{method} {path} headers={headers!r} body={(body or b'')[:300]!r}"
    parsed = check(send(srv, method, path, body, headers), what, method)
    still_serving(srv)
    return parsed


# -- strategies ----------------------------------------------------------------------------------

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
DATATYPES += ["FP16", "FP32", "FP64", "BYTES", "BF16", "FP33", "", "fp32", "TYPE_FP32"]
EDGE_INTS = st.sampled_from([0, 1, 4, -1, -4, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64])
INTS = st.one_of(EDGE_INTS, st.integers(-(2**70), 2**70), st.integers(-2, 20))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=12,
)
SHAPES = st.one_of(st.lists(INTS, max_size=4), JSON)


@st.composite
def infer_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """An input object near a valid one: each field kept, dropped or replaced."""
    tensor: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        tensor["name"] = draw(st.sampled_from(["INPUT0", "INPUT1", "INPUT9", ""]) | JSON)
    if draw(st.integers(0, 9)):
        tensor["datatype"] = draw(st.sampled_from(DATATYPES) | JSON)
    if draw(st.integers(0, 9)):
        tensor["shape"] = draw(SHAPES)
    choice = draw(st.integers(0, 4))
    if choice in (0, 1):
        tensor["data"] = draw(
            st.lists(st.one_of(INTS, st.floats(allow_nan=False), st.booleans()), max_size=8) | JSON
        )
    if choice in (2, 3):
        tensor["parameters"] = {"binary_data_size": draw(INTS | JSON)}
    if choice == 3 and draw(st.booleans()):
        tensor["data"] = [1, 2, 3, 4]
    if draw(st.integers(0, 5)) == 0:
        tensor["parameters"] = draw(JSON)
    return tensor


@st.composite
def infer_headers(draw: st.DrawFn) -> dict[str, Any]:
    header: dict[str, Any] = {"inputs": draw(st.lists(infer_inputs(), max_size=3))}
    if draw(st.booleans()):
        header["id"] = draw(JSON)
    if draw(st.integers(0, 3)) == 0:
        header["outputs"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["OUTPUT0", "OUTPUT1", "X"]) | JSON},
                    optional={"parameters": JSON},
                ),
                max_size=3,
            )
            | JSON
        )
    if draw(st.integers(0, 3)) == 0:
        header["parameters"] = draw(
            st.dictionaries(
                st.sampled_from(
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
                ),
                JSON,
                max_size=3,
            )
            | JSON
        )
    return header


MODELS = st.sampled_from(
    ["addsub", "batched", "strings", "nope", "addsub/versions/1", "addsub/versions/9"]
)


# -- inference -----------------------------------------------------------------------------------


@fuzz_settings()
@given(model=MODELS, header=infer_headers())
def test_json_infer(srv: Fixture, model: str, header: dict[str, Any]) -> None:
    exchange(srv, "POST", f"/v2/models/{model}/infer", json.dumps(header).encode())


@fuzz_settings()
@given(
    model=MODELS,
    header=infer_headers(),
    binary=st.binary(max_size=80),
    length=st.one_of(
        st.none(),
        st.just("auto"),
        INTS.map(str),
        st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=6),
        st.just(" 12 "),
    ),
)
def test_binary_infer(
    srv: Fixture, model: str, header: dict[str, Any], binary: bytes, length: str | None
) -> None:
    head = json.dumps(header).encode()
    headers = {}
    if length == "auto":
        headers["Inference-Header-Content-Length"] = str(len(head))
    elif length is not None:
        headers["Inference-Header-Content-Length"] = length
    exchange(srv, "POST", f"/v2/models/{model}/infer", head + binary, headers)


def _good_binary(n: int) -> tuple[bytes, int]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": f"INPUT{i}",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                }
                for i in range(2)
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return head + struct.pack("<8f", *range(8)) * n, len(head)


@fuzz_settings()
@given(
    data=st.data(),
    mutation=st.sampled_from(["flip", "truncate", "extend", "splice"]),
)
def test_mutated_binary_infer(srv: Fixture, data: st.DataObject, mutation: str) -> None:
    """A valid binary-tensor request with bytes flipped, cut, added or spliced."""
    body, head_len = _good_binary(1)
    raw = bytearray(body)
    if mutation == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] = data.draw(st.integers(0, 255))
    elif mutation == "truncate":
        del raw[data.draw(st.integers(0, len(raw) - 1)) :]
    elif mutation == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=40))
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.sampled_from([b'"', b"{", b"]", b"\x00", b"\xff\xfe", b"-1"]))
    length = data.draw(st.sampled_from([head_len, head_len - 1, head_len + 1, len(raw), 0]))
    exchange(
        srv,
        "POST",
        "/v2/models/addsub/infer",
        bytes(raw),
        {"Inference-Header-Content-Length": str(length)},
    )


@fuzz_settings()
@given(body=st.binary(max_size=200), with_length=st.booleans())
def test_random_bytes_infer(srv: Fixture, body: bytes, with_length: bool) -> None:
    headers = {"Inference-Header-Content-Length": str(len(body) // 2)} if with_length else {}
    exchange(srv, "POST", "/v2/models/addsub/infer", body, headers)


@fuzz_settings()
@given(
    encoding=st.sampled_from(["gzip", "deflate", "br", "identity", "GZIP", "gzip, deflate", "x"]),
    packing=st.sampled_from(["gzip", "zlib", "raw", "truncated", "garbage", "bomb"]),
    accept=st.one_of(st.none(), st.sampled_from(["gzip", "deflate", "br", "*", "x;q=2", ""])),
)
def test_compressed_infer(srv: Fixture, encoding: str, packing: str, accept: str | None) -> None:
    plain = json.dumps({"inputs": GOOD}).encode()
    if packing == "gzip":
        body = gzip.compress(plain)
    elif packing == "zlib":
        body = zlib.compress(plain)
    elif packing == "raw":
        body = plain
    elif packing == "truncated":
        body = gzip.compress(plain)[:-9]
    elif packing == "garbage":
        body = b"\x1f\x8b\x08\x00" + os.urandom(20)
    else:  # inflates past the body limit
        body = gzip.compress(b" " * (MAX_BODY * 4))
    headers = {"Content-Encoding": encoding}
    if accept is not None:
        headers["Accept-Encoding"] = accept
    exchange(srv, "POST", "/v2/models/addsub/infer", body, headers)


# -- repository, shared memory, settings ---------------------------------------------------------

NAMES = st.one_of(
    st.just(VICTIM),
    st.sampled_from(["nope", "..", ".", "a%2Fb", "%2e%2e", "x%00y", "%0a", "victim%2F..%2Fx"]),
    st.text(st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=12),
)
FILE_KEYS = st.sampled_from(
    ["file:1/model.onnx", "file:../escape", "file:/abs", "file:1/../../escape", "file:", "file:a"]
)


@fuzz_settings()
@given(
    name=NAMES,
    action=st.sampled_from(["load", "unload"]),
    body=st.one_of(
        st.none(),
        JSON,
        st.fixed_dictionaries(
            {},
            optional={
                "parameters": st.dictionaries(
                    st.sampled_from(["config", "unload_dependents"]) | FILE_KEYS,
                    st.one_of(
                        JSON,
                        st.sampled_from(["{}", '{"backend": "kerneltest"}', "not json", ""]),
                        st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()),
                    ),
                    max_size=3,
                )
                | JSON
            },
        ),
    ),
)
def test_repository(srv: Fixture, name: str, action: str, body: Any) -> None:
    if name == "addsub":
        return
    raw = None if body is None else json.dumps(body).encode()
    path = quote(name, safe="%")  # "%2F" and friends stay as the test wrote them
    exchange(srv, "POST", f"/v2/repository/models/{path}/{action}", raw)
    root = srv.running.server.options.model_repositories[0]
    assert not (root.parent / "escape").exists()


@fuzz_settings()
@given(
    kind=st.sampled_from(["systemsharedmemory", "cudasharedmemory"]),
    region=st.one_of(st.none(), st.sampled_from(["r", "r1", "%00", "a%2Fb"])),
    action=st.sampled_from(["register", "unregister", "status"]),
    body=st.one_of(
        st.none(),
        JSON,
        st.fixed_dictionaries(
            {},
            optional={
                "key": st.one_of(
                    st.sampled_from(["REAL", "/REAL", "nope", "", "..", "a/b", "/dev/null"]),
                    st.text(max_size=10),
                    JSON,
                ),
                "offset": INTS | JSON,
                "byte_size": INTS | JSON,
                "device_id": INTS | JSON,
                "raw_handle": JSON,
            },
        ),
    ),
)
def test_shared_memory(srv: Fixture, kind: str, region: str | None, action: str, body: Any) -> None:
    if isinstance(body, dict) and isinstance(body.get("key"), str):
        body["key"] = body["key"].replace("REAL", srv.shm_key)
    path = f"/v2/{kind}" + (f"/region/{region}" if region is not None else "") + f"/{action}"
    raw = None if body is None else json.dumps(body).encode()
    exchange(srv, "GET" if action == "status" else "POST", path, raw)
    send(srv, "POST", f"/v2/{kind}/unregister")


SETTING_KEYS = [
    "trace_level",
    "trace_rate",
    "trace_count",
    "log_frequency",
    "trace_file",
    "trace_mode",
    "log_file",
    "log_info",
    "log_warning",
    "log_error",
    "log_verbose_level",
    "log_format",
]


@fuzz_settings()
@given(
    target=st.sampled_from(
        [
            "/v2/trace/setting",
            "/v2/models/addsub/trace/setting",
            "/v2/models/nope/trace/setting",
            "/v2/logging",
        ]
    ),
    body=st.one_of(
        JSON,
        st.dictionaries(
            st.sampled_from(SETTING_KEYS),
            st.one_of(
                JSON,
                st.sampled_from(["TIMESTAMPS", "TENSORS", "OFF", "default", "ISO8601", "1"]),
                st.lists(st.sampled_from(["TIMESTAMPS", "TENSORS", "OFF", "X"]), max_size=3),
                st.just("CANARY"),
            ),
            max_size=4,
        ),
    ),
)
def test_settings(srv: Fixture, target: str, body: Any) -> None:
    if isinstance(body, dict):
        for key in ("log_file", "trace_file"):
            if body.get(key) == "CANARY":
                body[key] = str(srv.canary / f"{key}.txt")
        # A verbose level would flood the suite's log: keep it low.
        if isinstance(body.get("log_verbose_level"), int):
            body["log_verbose_level"] = min(max(body["log_verbose_level"], -2), 0)
    exchange(srv, "POST", target, json.dumps(body).encode())
    assert list(srv.canary.iterdir()) == [], f"POST {target} {body!r} created a file"


@fuzz_settings()
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
    path=st.lists(
        st.sampled_from(
            [
                "v2",
                "models",
                "addsub",
                "versions",
                "1",
                "-1",
                "99999999999999999999",
                "infer",
                "ready",
                "config",
                "stats",
                "repository",
                "index",
                "health",
                "live",
                "trace",
                "setting",
                "logging",
                "systemsharedmemory",
                "region",
                "status",
                "%",
                "%zz",
                "%00",
                "..",
                "",
                "x" * 300,
            ]
        ),
        max_size=7,
    ).map(lambda parts: "/" + "/".join(parts)),
    body=st.one_of(st.none(), st.binary(max_size=40), JSON.map(lambda v: json.dumps(v).encode())),
)
def test_any_route(srv: Fixture, method: str, path: str, body: bytes | None) -> None:
    exchange(srv, method, path, body)
