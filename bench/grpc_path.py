"""The gRPC ModelInfer path alone, without sockets or a client, measured in ways a loaded machine
does not move much: event-loop CPU time per request, or (``--callgrind``) instructions.

One server runs in this process (uvloop), serving bench/perf.py's Python add/sub model
in-process; one gRPC ``ServerConnection`` with a transport that records instead of sending is fed
perf_analyzer's own bytes (captured from ``perf_analyzer -i grpc`` 2.51 through a recording
proxy: its connection preface, the metadata rpcs it makes first, then one ModelInfer after
another, whose header blocks are 8 bytes of dynamic-table references), one request at a time.
Measured around ``--requests`` of them: the event loop thread's CPU time (``time.thread_time``;
the model's thread is not counted), and under ``--callgrind`` the user-space instructions of the
whole process (bench/_measure.py and _trees.py: the same driving as bench/http_path.py).

    python bench/grpc_path.py [--requests 20000] [--rounds 5] [--profile out.prof]
    python bench/grpc_path.py --tree before=/path/to/old/checkout --tree after=. \
        [--callgrind] [--rounds 3] [--requests 2000]
"""

from __future__ import annotations

import asyncio
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import main, measure
from http_path import _Transport as _HttpTransport
from perf import _repository

from kernel.frontends._grpc._in_flight import InFlight
from kernel.frontends._grpc._method_table import methods
from kernel.frontends._grpc._server import GrpcServer, ServerConnection
from kernel.frontends._grpc._service import InferenceServicer
from kernel.testing import run_server

SETUP = bytes.fromhex(
    "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a00002404000000000000020000000000030000000000"
    "0400400000000500400000000600004000fe0300000001000004080000000000003f000100000004010000000000"
    "00e701040000000140053a706174682d2f696e666572656e63652e47525043496e666572656e6365536572766963"
    "652f4d6f64656c4d65746164617461400a3a617574686f726974790f3132372e302e302e313a3138313131838640"
    "0c636f6e74656e742d74797065106170706c69636174696f6e2f677270634002746508747261696c657273401467"
    "7270632d6163636570742d656e636f64696e67176964656e746974792c206465666c6174652c20677a6970400a75"
    "7365722d6167656e742d677270632d632b2b2f312e35342e3320677270632d632f33312e302e3020286c696e7578"
    "3b20636874747032290000040800000000010000000500000e00010000000100000000090a076164645f73756200"
    "000408000000000000000005000008060000000000000000000000000000003a01040000000340053a706174682b"
    "2f696e666572656e63652e47525043496e666572656e6365536572766963652f4d6f64656c436f6e666967c38386"
    "c2c1c0bf0000040800000000030000000500000e00010000000300000000090a076164645f737562000004080000"
    "0000000000006700003d01040000000540053a706174682e2f696e666572656e63652e47525043496e666572656e"
    "6365536572766963652f5365727665724d65746164617461c48386c3c2c1c0000004080000000005000000050000"
    "0500010000000500000000000000040800000000000000006800003e01040000000740053a706174682f2f696e66"
    "6572656e63652e47525043496e666572656e6365536572766963652f4d6f64656c53746174697374696373c58386"
    "c4c3c2c10000040800000000070000000500000e00010000000700000000090a076164645f737562000004080000"
    "000000000000a7000008060000000000000000000000000100003901040000000940053a706174682a2f696e6665"
    "72656e63652e47525043496e666572656e6365536572766963652f4d6f64656c496e666572c68386c5c4c3c20000"
    "040800000000090000000500009800010000000900000000930a076164645f73756222280a22747269746f6e5f65"
    "6e61626c655f656d7074795f66696e616c5f726573706f6e7365120208012a110a06494e50555430120446503332"
    "1a01042a110a06494e505554311204465033321a010432090a074f55545055543032090a074f5554505554313a10"
    "67c6697351ff4aec29cdbaabf2fbe3463a1067c6697351ff4aec29cdbaabf2fbe346000004080000000000000000"
    "76"
)
"""perf_analyzer's first bytes: preface, SETTINGS, WINDOW_UPDATE, SETTINGS ACK, then streams 1-9
(ModelMetadata, ModelConfig, ServerMetadata, ModelStatistics, the first ModelInfer)."""

_CREDIT = bytes.fromhex("0000040800000000000000005d")
_REQUEST = bytes.fromhex(
    "00000801040000000dbec68386c5c4c3c200000408000000000d0000000500009800010000000d0000000093"
    "0a076164645f73756222280a22747269746f6e5f656e61626c655f656d7074795f66696e616c5f726573706f"
    "6e7365120208012a110a06494e505554301204465033321a01042a110a06494e505554311204465033321a01"
    "0432090a074f55545055543032090a074f5554505554313a1067c6697351ff4aec29cdbaabf2fbe3463a1067"
    "c6697351ff4aec29cdbaabf2fbe346"
)
"""One steady-state ModelInfer (stream 11): HEADERS, a stream WINDOW_UPDATE, DATA; each after
the connection WINDOW_UPDATE crediting the previous reply (``_CREDIT``)."""

_FRAME_HEAD = struct.Struct(">BHBBL")


class _Transport(_HttpTransport):
    """Records the last write and wakes the driver (its buffer never fills)."""

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass


def request(stream_id: int) -> bytes:
    """``_REQUEST`` (behind ``_CREDIT``) on stream ``stream_id``."""
    out = bytearray(_CREDIT + _REQUEST)
    pos = 0
    while pos < len(out):
        high, low, kind, flags, sid = _FRAME_HEAD.unpack_from(out, pos)
        if sid:
            _FRAME_HEAD.pack_into(out, pos, high, low, kind, flags, stream_id)
        pos += 9 + (high << 16 | low)
    return bytes(out)


async def _run(
    requests: int, rounds: int, profile: Path | None, callgrind: Path | None = None
) -> list[tuple[float, float]]:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repository(Path(tmp), ["add_sub"])
        config = {"python": {"execution-mode": "in_process"}}
        async with run_server(repo, backend_config=config) as running:
            servicer = InferenceServicer(running.server, InFlight())
            grpc = GrpcServer(methods([servicer.__mapping__()]), max_message_bytes=1 << 31)
            connection = ServerConnection(grpc)
            transport = _Transport()
            connection.connection_made(transport)  # type: ignore[arg-type]
            connection.data_received(SETUP)
            await asyncio.sleep(0.5)  # the setup rpcs answered
            stream_ids = iter(range(11, 1 << 31, 2))
            # the requests, made before measuring
            frames = [request(next(stream_ids)) for _ in range(2000 + requests * rounds + 1)]
            pending = iter(frames)

            async def one() -> bytes:
                transport.written = loop.create_future()
                connection.data_received(next(pending))
                return await transport.written

            reply = await one()
            if not reply.endswith(b"grpc-status\x010") or b"OUTPUT1" not in reply:
                raise RuntimeError(f"unexpected reply: {reply[:200]!r}")
            warmup = min(2000, requests)
            results = await measure(
                one, requests, rounds, warmup=warmup, profile=profile, callgrind=callgrind
            )
            connection.connection_lost(None)
    return results


if __name__ == "__main__":
    main(__doc__.splitlines()[0], "per gRPC ModelInfer request", _run)
