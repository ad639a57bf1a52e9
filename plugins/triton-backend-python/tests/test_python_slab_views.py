"""Large inputs reach a model in its own process as views of the server's shared memory slab.

The server copies a message's large arrays into a slab once; the model process reads them in
place (``SlabReader(in_place=True)``), and the slab goes back to the server only when the last
array over it is gone. These tests pin what that must keep: the answers, a model that keeps an
input (or a view of it) after its request, a model that writes into its input, inputs from a
client's system shared memory region, through both protocols.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from triton_backend_python._wire import (
    INLINE_LIMIT,
    MAX_LEASES,
    SlabPool,
    SlabReader,
    decode,
    encode,
)

from kernel.testing import RunningServer, ServerThread

LARGE = INLINE_LIMIT // 4 * 3  # floats: three times the inline limit, so through a slab


def _frame(message: object, pool: SlabPool) -> bytearray:
    return bytearray(b"".join(bytes(p) for p in encode(message, pool))[4:])


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[tuple[SlabPool, SlabReader]]:
    pool, reader = SlabPool("views", str(tmp_path)), SlabReader(str(tmp_path), in_place=True)
    try:
        yield pool, reader
    finally:
        pool.close()
        reader.close()


def test_arrays_are_views_of_the_slab_held_until_they_go(
    wire: tuple[SlabPool, SlabReader],
) -> None:
    pool, reader = wire
    source = np.arange(LARGE, dtype=np.float32)
    first = decode(_frame(("execute", {"X": source}), pool), reader)[1]["X"]
    np.testing.assert_array_equal(first, source)
    assert len(pool._slabs) == 1 and reader.leased() == 1
    slab = pool._slabs[0].mm
    # A view: what the model writes lands in the slab (this message's own bytes).
    first[0] = -1.0
    assert np.frombuffer(slab, dtype=np.float32, count=1, offset=64)[0] == -1.0
    # While any array over the message lives, the writer must not reuse its slab.
    derived = first.reshape(3, -1)[1:, ::2]
    del first
    gc.collect()
    assert slab[0] == 1 and reader.leased() == 1
    second = decode(_frame(("execute", {"X": source + 1}), pool), reader)[1]["X"]
    assert len(pool._slabs) == 2
    np.testing.assert_array_equal(derived, source.reshape(3, -1)[1:, ::2])
    np.testing.assert_array_equal(second, source + 1)
    # Once they are gone the slab is the writer's again, and reused.
    del derived, second
    assert reader.leased() == 0 and slab[0] == 0
    decode(_frame(("execute", {"X": source}), pool), reader)
    assert len(pool._slabs) == 2


def test_a_reader_holds_a_bounded_number_of_slabs(wire: tuple[SlabPool, SlabReader]) -> None:
    pool, reader = wire
    kept = []
    for n in range(MAX_LEASES + 4):  # a model that keeps every input
        source = np.full(LARGE, n, dtype=np.float32)
        kept.append(decode(_frame(("execute", {"X": source}), pool), reader)[1]["X"])
    # the first MAX_LEASES are views, each holding its slab; the rest copies, which hand their
    # slab back at once: the writer reused one slab for all of them
    assert reader.leased() == MAX_LEASES
    assert len(pool._slabs) == MAX_LEASES + 1
    for n, array in enumerate(kept):
        np.testing.assert_array_equal(array, np.full(LARGE, n, dtype=np.float32))
    del kept, array
    assert reader.leased() == 0


def test_a_read_only_input_arrives_writable(wire: tuple[SlabPool, SlabReader]) -> None:
    pool, reader = wire
    source = np.ones(LARGE, dtype=np.float32)
    source.flags.writeable = False  # e.g. a view of a gRPC message's bytes
    small = np.ones(4, dtype=np.float32)
    small.flags.writeable = False
    decoded = decode(_frame(("execute", {"X": source, "S": small}), pool), reader)[1]
    x = decoded["X"]
    assert x.flags.writeable
    x += 1
    np.testing.assert_array_equal(x, source + 1)
    assert source[0] == 1.0  # the sender's array is not the slab
    # Arrays that are not in a slab keep their read-only flag (``as_numpy`` copies them).
    decoded = decode(_frame(("execute", {"S": small}), pool), reader)[1]
    assert not decoded["S"].flags.writeable


def test_closing_the_reader_leaves_live_arrays_readable(tmp_path: Path) -> None:
    pool, reader = SlabPool("closing", str(tmp_path)), SlabReader(str(tmp_path), in_place=True)
    source = np.arange(LARGE, dtype=np.float32)
    try:
        kept = decode(_frame(("execute", {"X": source}), pool), reader)[1]["X"]
        reader.close()  # the model process ends while a model still holds an input
        np.testing.assert_array_equal(kept, source)
        del kept
    finally:
        pool.close()


def test_a_copying_reader_hands_the_slab_back_at_once(wire: tuple[SlabPool, SlabReader]) -> None:
    pool, _ = wire
    reader = SlabReader(pool.directory)
    try:
        source = np.arange(LARGE, dtype=np.float32)
        x = decode(_frame(("execute", {"X": source}), pool), reader)[1]["X"]
        assert pool._slabs[0].mm[0] == 0  # free while ``x`` lives: a copy
        assert reader.leased() == 0
        x[0] = -1.0
        assert np.frombuffer(pool._slabs[0].mm, dtype=np.float32, count=1, offset=64)[0] == 0.0
        np.testing.assert_array_equal(x[1:], source[1:])
    finally:
        reader.close()


@pytest.fixture(scope="module")
def keep_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("models")
    shutil.copytree(Path(__file__).parent / "models" / "python_keep", repository / "python_keep")
    with ServerThread(repository) as served:  # the default: a process per model instance
        yield served


def _model_slabs() -> int:
    """The slabs model processes started by this process's servers have written."""
    return len(list(Path("/dev/shm").glob(f"tkpy-{os.getpid()}-*c-*")))


def _client(served: RunningServer, protocol: str) -> Any:
    if protocol == "grpc":
        return grpcclient.InferenceServerClient(served.grpc_url)
    return httpclient.InferenceServerClient(served.http_url)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("system_shm", [False, True], ids=["body", "system-shm"])
def test_a_model_that_keeps_and_writes_its_large_inputs(
    keep_server: RunningServer, protocol: str, system_shm: bool
) -> None:
    module = grpcclient if protocol == "grpc" else httpclient
    client = _client(keep_server, protocol)
    size = LARGE * 4
    key = f"/slab_views_{protocol}_{int(system_shm)}"
    regions: list[Any] = []
    try:
        if system_shm:
            regions.append(shm.create_shared_memory_region("in", key + "_in", size))
            regions.append(shm.create_shared_memory_region("out", key + "_out", size))
            client.register_system_shared_memory("in", key + "_in", size)
            client.register_system_shared_memory("out", key + "_out", size)
        model_slabs = _model_slabs()
        seen: list[float] = []
        for value in range(1, 6):
            data = np.full((1, LARGE), float(value + 10 * len(seen)), dtype=np.float32)
            inputs = [module.InferInput("INPUT0", [1, LARGE], "FP32")]
            outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("KEPT")]
            if system_shm:
                shm.set_shared_memory_region(regions[0], [data])
                inputs[0].set_shared_memory("in", size)
                outputs[0].set_shared_memory("out", size)
            else:
                inputs[0].set_data_from_numpy(data)
            result = client.infer("python_keep", inputs, outputs=outputs)
            if system_shm:
                # the model's write went to its own copy, never back to the client's region
                np.testing.assert_array_equal(
                    shm.get_contents_as_numpy(regions[0], np.float32, [1, LARGE]), data
                )
                out = shm.get_contents_as_numpy(regions[1], np.float32, [1, LARGE])
            else:
                out = result.as_numpy("OUTPUT0")
            np.testing.assert_array_equal(out, data + 1)
            seen.append(float(data[0, 0]) + 1)
            kept = result.as_numpy("KEPT").reshape(-1, 2)
            # every view kept so far (earlier tests' too) still holds what its request sent,
            # plus the model's +1
            np.testing.assert_array_equal(kept[-len(seen) :, 0], seen)
            np.testing.assert_array_equal(kept[-len(seen) :, 1], seen)
        # The server read each large OUTPUT0 from the model process's slab and handed the slab
        # back once the response was sent: the model process reused one slab for all of them.
        # (The server's own slabs grow: the model keeps every input.)
        assert _model_slabs() <= model_slabs + 1
    finally:
        if system_shm:
            client.unregister_system_shared_memory()
            for region in regions:
                shm.destroy_shared_memory_region(region)
        client.close()
