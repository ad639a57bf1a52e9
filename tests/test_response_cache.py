"""The response cache: an LRU bounded in bytes, Triton's key, hits and misses in statistics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kernel import InferenceRequest, InferenceResponse
from kernel._cli import build_parser
from kernel._response_cache import ENTRY_OVERHEAD_BYTES, ResponseCache, parse_cache_config
from kernel._serve_command import options_from_args
from kernel.testing import run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}
CACHE = {"cache_config": {"local": {"size": str(1 << 20)}}}


def _request(value: float, *, outputs: tuple[str, ...] = (), model: str = "m") -> InferenceRequest:
    data = np.full((1, 4), value, np.float32)
    return InferenceRequest(model, {"INPUT0": data, "INPUT1": data}, requested_output_names=outputs)


def _response(nbytes: int) -> InferenceResponse:
    return InferenceResponse(outputs={"OUT": np.zeros(nbytes, np.uint8)})


def test_the_key_covers_model_version_inputs_and_requested_outputs() -> None:
    key = ResponseCache.key
    base = key(_request(1.0), 1)
    assert key(_request(1.0), 1) == base
    assert key(_request(2.0), 1) != base  # input bytes
    assert key(_request(1.0), 2) != base  # version
    assert key(_request(1.0, model="other"), 1) != base  # model
    assert key(_request(1.0, outputs=("OUTPUT0",)), 1) != base  # requested outputs
    reshaped = _request(1.0)
    reshaped.inputs = {k: v.reshape(4, 1) for k, v in reshaped.inputs.items()}
    assert key(reshaped, 1) != base  # shape
    retyped = _request(1.0)
    retyped.inputs = {k: v.view(np.int32) for k, v in retyped.inputs.items()}
    assert key(retyped, 1) != base  # datatype, same bytes
    strings = InferenceRequest("m", {"S": np.array([b"ab", b"c"], dtype=object)})
    split = InferenceRequest("m", {"S": np.array([b"a", b"bc"], dtype=object)})
    assert key(strings, 1) != key(split, 1)


def test_lru_stays_within_its_bytes_and_evicts_the_least_recent() -> None:
    entry = 100 + ENTRY_OVERHEAD_BYTES
    cache = ResponseCache(3 * entry)
    for name in (b"a", b"b", b"c"):
        assert cache.insert(name, _response(100))
    assert cache.used == 3 * entry
    assert cache.lookup(b"a") is not None  # "a" is now the most recent
    cache.insert(b"d", _response(100))
    assert cache.lookup(b"b") is None  # the least recent went
    assert cache.lookup(b"a") is not None and cache.lookup(b"d") is not None
    assert cache.used <= cache.capacity and len(cache) == 3
    assert cache.stats.evictions == 1
    assert not cache.insert(b"huge", _response(3 * entry))  # larger than the whole cache
    assert len(cache) == 3


def test_cached_outputs_are_private_copies() -> None:
    cache = ResponseCache(1 << 10)
    source = np.arange(4, dtype=np.int32)
    cache.insert(b"k", InferenceResponse(outputs={"OUT": source}))
    source[:] = 0
    hit = cache.lookup(b"k")
    assert hit is not None
    np.testing.assert_array_equal(hit.outputs["OUT"], [0, 1, 2, 3])
    assert not hit.outputs["OUT"].flags.writeable


async def test_hits_skip_the_model_and_count_as_triton_counts_them(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "m", kt_config("identity", extra="response_cache { enable: true }"))
    add_model(repo, "plain", kt_config("identity"))
    async with run_server(repo, **NO_ENDPOINTS, **CACHE) as srv:
        for value in (1.0, 1.0, 2.0, 1.0):
            response = await srv.server.infer_once(_request(value))
            assert response.error is None
            np.testing.assert_array_equal(response.outputs["OUTPUT0"], np.full((1, 4), value))
        only = await srv.server.infer_once(_request(2.0, outputs=("OUTPUT1",)))
        assert set(only.outputs) == {"OUTPUT1"}
        stats = srv.server.model_statistics("m")[0]
        assert (stats.cache_hit.count, stats.cache_miss.count) == (2, 3)
        assert stats.success.count == 5  # hits are successes
        assert stats.execution_count == 3 and stats.inference_count == 3  # hits are not
        for _ in range(2):
            await srv.server.infer_once(_request(1.0, model="plain"))
        plain = srv.server.model_statistics("plain")[0]
        assert (plain.cache_hit.count, plain.cache_miss.count, plain.execution_count) == (0, 0, 2)


async def test_errors_are_not_cached(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "m", kt_config("raise", extra="response_cache { enable: true }"))
    async with run_server(repo, **NO_ENDPOINTS, **CACHE) as srv:
        for _ in range(2):
            response = await srv.server.infer_once(_request(1.0))
            assert response.error is not None
        stats = srv.server.model_statistics("m")[0]
        assert stats.cache_hit.count == 0 and stats.execution_count == 2


async def test_without_a_server_cache_the_model_runs_every_time(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "m", kt_config("identity", extra="response_cache { enable: true }"))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        for _ in range(2):
            assert (await srv.server.infer_once(_request(1.0))).error is None
        assert srv.server.model_statistics("m")[0].execution_count == 2


async def test_a_decoupled_model_with_the_cache_fails_to_load(
    repo: Path, add_model: Callable[..., Path], repeat_config: str
) -> None:
    add_model(repo, "r", repeat_config + "response_cache { enable: true }")
    async with run_server(repo, **NO_ENDPOINTS, **CACHE) as srv:
        rows = {row.name: row for row in srv.server.repository_index()}
        assert rows["r"].state == "UNAVAILABLE"
        assert "Response Cache does not currently support model r" in rows["r"].reason


def test_cache_flags() -> None:
    def options(*flags: str) -> dict[str, dict[str, str]]:
        args, _ = build_parser().parse_known_args(["serve", *flags])
        return options_from_args(args).cache_config

    assert options("--cache-config", "local,size=1048576") == {"local": {"size": "1048576"}}
    assert options("--response-cache-byte-size=4096") == {"local": {"size": "4096"}}
    assert parse_cache_config({"local": {"size": "4096"}}) == 4096
    assert parse_cache_config({}) is None
    with pytest.raises(ValueError, match="only the in-process 'local' cache"):
        parse_cache_config({"redis": {"host": "x"}})
    with pytest.raises(ValueError, match="whole number"):
        parse_cache_config({"local": {"size": "lots"}})
