"""``model_warmup``: samples run on every instance after it initializes and before READY."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernel import InferenceRequest, KernelError
from kernel._config_text import parse_model_config
from kernel.testing import run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def _options(log: Path) -> dict[str, object]:
    return {**NO_ENDPOINTS, "backend_config": {"kerneltest": {"lifecycle_log": str(log)}}}


def _warmup(
    name: str = "w",
    *,
    batch_size: int = 1,
    count: int = 0,
    data: str = "zero_data: true",
    dims: str = "[ 4 ]",
    datatype: str = "TYPE_FP32",
    inputs: tuple[str, ...] = ("INPUT0", "INPUT1"),
) -> str:
    entries = ",\n".join(
        f'{{ key: "{i}" value: {{ data_type: {datatype} dims: {dims} {data} }} }}' for i in inputs
    )
    return f"""
model_warmup [ {{
  name: "{name}" batch_size: {batch_size} count: {count}
  inputs [ {entries} ]
}} ]
"""


def _executions(log: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("execute "):
            _, instance, payload = line.split(" ", 2)
            found.append((instance, json.loads(payload)))
    return found


async def test_every_instance_runs_every_sample_before_ready(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    log = tmp_path / "events.log"
    config = kt_config(
        "identity",
        count=2,
        parameters={"log_execute": "1"},
        extra=_warmup(batch_size=3, count=2),
    )
    add_model(repo, "m", config)
    async with run_server(repo, **_options(log)) as srv:
        assert srv.server.is_model_ready("m")
        events = log.read_text().splitlines()
        runs = _executions(log)
        # Two instances x count 2, each one batch of batch_size 3 requests of batch size 1.
        assert [instance for instance, _ in runs] == ["m_0_0", "m_0_0", "m_0_1", "m_0_1"]
        for _, batch in runs:
            assert len(batch) == 3
            for request in batch:
                assert request["shapes"] == {"INPUT0": [1, 4], "INPUT1": [1, 4]}
                assert request["inputs"]["INPUT0"] == [0.0] * 4
        # Each instance warms up after it initialized, and all of it before the model serves.
        first_run = events.index(next(e for e in events if e.startswith("execute m_0_0")))
        assert events.index("instance.initialize m_0_0 KIND_CPU") < first_run
        # Warmup counts in no statistics.
        stats = srv.server.model_statistics("m")[0]
        assert stats.inference_count == 0 and stats.execution_count == 0
        response = await srv.server.infer_once(
            InferenceRequest(
                "m",
                {"INPUT0": np.ones((1, 4), np.float32)} | {"INPUT1": np.ones((1, 4), np.float32)},
            )
        )
        assert response.error is None


async def test_random_and_file_data(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    log = tmp_path / "events.log"
    warmup = """
model_warmup [ {
  name: "from_files" batch_size: 1
  inputs [
    { key: "INPUT0" value: { data_type: TYPE_INT32 dims: [ 4 ] input_data_file: "four_ints" } },
    { key: "INPUT1" value: { data_type: TYPE_INT32 dims: [ 4 ] random_data: true } }
  ]
}, {
  name: "strings" batch_size: 1
  inputs [
    { key: "INPUT0" value: { data_type: TYPE_STRING dims: [ 2 ] input_data_file: "two_strings" } },
    { key: "INPUT1" value: { data_type: TYPE_STRING dims: [ 2 ] zero_data: true } }
  ]
} ]
"""
    folder = add_model(
        repo,
        "m",
        kt_config(
            "identity",
            max_batch_size=0,
            datatype="TYPE_INT32",
            parameters={"log_execute": "1"},
            extra=warmup,
        ),
    )
    (folder / "warmup").mkdir()
    np.array([5, 6, 7, 8], np.int32).tofile(folder / "warmup" / "four_ints")
    (folder / "warmup" / "two_strings").write_bytes(
        struct.pack("<I", 2) + b"hi" + struct.pack("<I", 5) + b"there"
    )
    async with run_server(repo, **_options(log)) as srv:
        assert srv.server.is_model_ready("m")
    (_, ints), (_, strings) = _executions(log)
    assert ints[0]["inputs"]["INPUT0"] == [5, 6, 7, 8]
    assert ints[0]["shapes"]["INPUT0"] == [4]  # no batch dimension without batching
    assert len(ints[0]["inputs"]["INPUT1"]) == 4
    assert strings[0]["inputs"] == {"INPUT0": ["hi", "there"], "INPUT1": ["", ""]}


async def test_decoupled_model_warms_up(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path], repeat_config: str
) -> None:
    warmup = _warmup(inputs=("IN",), datatype="TYPE_INT32", dims="[ 3 ]", data="random_data: true")
    add_model(repo, "r", repeat_config + warmup)
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        assert srv.server.is_model_ready("r")


@pytest.mark.parametrize(
    ("behaviour", "warmup", "reason"),
    [
        ("raise", _warmup(), "failed to warm up instance 'm_0_0' with sample 'w'"),
        ("no_answer", _warmup(), "without answering the warmup request"),
        ("identity", _warmup(batch_size=9), "batch_size 9 exceeds the model's max_batch_size 8"),
        ("identity", _warmup(dims="[ -1 ]"), "variable dims"),
        ("identity", _warmup(data='input_data_file: "../config.pbtxt"'), "outside the warmup"),
        ("identity", _warmup(data='input_data_file: "missing"'), "cannot read input_data_file"),
    ],
)
async def test_a_failed_warmup_makes_the_model_unavailable(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    behaviour: str,
    warmup: str,
    reason: str,
) -> None:
    add_model(repo, "m", kt_config(behaviour, extra=warmup))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        assert not srv.server.is_model_ready("m")
        rows = {r.name: r for r in srv.server.repository_index()}
        assert rows["m"].state == "UNAVAILABLE"
        assert reason in rows["m"].reason


def test_a_data_file_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    from kernel._warmup import warmup_samples

    (tmp_path / "warmup").mkdir()
    (tmp_path / "warmup" / "short").write_bytes(b"\0" * 12)
    config = parse_model_config(
        'name: "m" max_batch_size: 0 ' + _warmup(data='input_data_file: "short"'), "x"
    )
    with pytest.raises(
        KernelError, match="holds 12 bytes, input 'INPUT0' of dims \\[4\\] needs 16"
    ):
        warmup_samples(config, tmp_path)
