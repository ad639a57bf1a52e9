"""Model control: none / explicit / poll modes, load with overrides and file contents,
reload without failing in-flight requests, version policies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kernel import InferenceRequest, KernelError, ModelControlMode, Status
from kernel.testing import run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def _pair(rows: int = 1) -> dict[str, np.ndarray]:
    a = np.arange(4 * rows, dtype=np.float32).reshape(rows, 4)
    return {"INPUT0": a, "INPUT1": a}


async def test_explicit_mode_loads_only_what_is_asked(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "a", kt_config("addsub"))
    add_model(repo, "b", kt_config("addsub"))
    options = {
        **NO_ENDPOINTS,
        "model_control_mode": ModelControlMode.EXPLICIT,
        "load_models": ["a"],
    }
    async with run_server(repo, **options) as srv:
        server = srv.server
        assert server.is_model_ready("a") and not server.is_model_ready("b")
        assert server.is_ready()  # models never asked for do not count against readiness
        assert {(r.name, r.state) for r in server.repository_index()} == {
            ("a", "READY"),
            ("b", ""),
        }
        with pytest.raises(KernelError) as info:
            await server.infer_once(InferenceRequest("b", _pair()))
        assert info.value.status is Status.NOT_FOUND
        assert info.value.message == "Request for unknown model: 'b' is not found"
        await server.load_model("b")
        assert server.is_model_ready("b")
        await server.unload_model("a")
        assert not server.is_model_ready("a")
        rows = {r.name: r for r in server.repository_index()}
        assert (rows["a"].state, rows["a"].reason) == ("UNAVAILABLE", "unloaded")
        with pytest.raises(KernelError) as info:
            await server.infer_once(InferenceRequest("a", _pair()))
        assert info.value.status is Status.NOT_FOUND  # Triton 2.51 answers 404 / NOT_FOUND
        assert server.repository_index(ready_only=True)[0].name == "b"


async def test_load_and_unload_need_explicit_mode(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "a", kt_config())
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        for call in (srv.server.load_model("a"), srv.server.unload_model("a")):
            with pytest.raises(KernelError) as info:
                await call
            assert info.value.status is Status.FAILED_PRECONDITION
            assert "explicit model load / unload is not allowed" in info.value.message
        assert srv.server.is_model_ready("a")


async def test_explicit_mode_star_loads_everything(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "a", kt_config())
    add_model(repo, "b", kt_config())
    options = {
        **NO_ENDPOINTS,
        "model_control_mode": ModelControlMode.EXPLICIT,
        "load_models": ["*"],
    }
    async with run_server(repo, **options) as srv:
        assert srv.server.is_model_ready("a") and srv.server.is_model_ready("b")


async def test_load_with_config_override_and_file_contents(
    repo: Path, kt_config: Callable[..., str]
) -> None:
    config = {
        "backend": "kerneltest",
        "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [2]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [2]}],
        "parameters": {"behaviour": {"string_value": "identity"}},
    }
    options = {**NO_ENDPOINTS, "model_control_mode": ModelControlMode.EXPLICIT}
    async with run_server(repo, **options) as srv:
        server = srv.server
        await server.load_model("virtual", json.dumps(config), {"3/weights.bin": b"\x00" * 8})
        assert server.is_model_ready("virtual", 3)
        x = np.array([[1, 2]], dtype=np.int32)
        response = await server.infer_once(InferenceRequest("virtual", {"INPUT0": x}))
        np.testing.assert_array_equal(response.outputs["OUTPUT0"], x)
        assert server.model_config("virtual").max_batch_size == 4
        model_dir = server.route("virtual").context.model_dir
        assert (model_dir / "3" / "weights.bin").read_bytes() == b"\x00" * 8
        assert not (repo / "virtual").exists()  # contents never land in the repository
        await server.unload_model("virtual")
        assert not model_dir.exists()  # the temporary folder goes with the model
        with pytest.raises(KernelError, match="requires a config"):
            await server.load_model("virtual", None, {"1/x": b""})
        with pytest.raises(KernelError, match="is not a relative path inside the model folder"):
            await server.load_model("virtual", json.dumps(config), {"../../x": b""})


async def test_bad_config_override_is_refused_naming_the_field(repo: Path) -> None:
    options = {**NO_ENDPOINTS, "model_control_mode": ModelControlMode.EXPLICIT}
    async with run_server(repo, **options) as srv:
        with pytest.raises(KernelError) as info:
            await srv.server.load_model(
                "x", '{"backend": "kerneltest", "nonsense_field": 1}', {"1/a": b""}
            )
        assert info.value.status is Status.INVALID_ARG
        assert "nonsense_field" in info.value.message


async def test_reload_serves_new_files_without_failing_in_flight_requests(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "m", kt_config("sleep", parameters={"sleep_ms": "150"}))
    options = {
        **NO_ENDPOINTS,
        "model_control_mode": ModelControlMode.EXPLICIT,
        "load_models": ["m"],
    }
    async with run_server(repo, **options) as srv:
        server = srv.server
        old = server.route("m")
        in_flight = [
            asyncio.create_task(server.infer_once(InferenceRequest("m", _pair()))) for _ in range(4)
        ]
        await asyncio.sleep(0.05)  # let them reach the old version's queue
        add_model(repo, "m", kt_config("addsub"))  # the model's files change
        await server.load_model("m")
        new = server.route("m")
        assert new is not old
        results = await asyncio.gather(*in_flight)
        assert all(r.error is None for r in results)
        # The in-flight requests were answered by the old (identity) version.
        for r in results:
            np.testing.assert_array_equal(r.outputs["OUTPUT0"], _pair()["INPUT0"])
        response = await server.infer_once(InferenceRequest("m", _pair()))
        np.testing.assert_array_equal(response.outputs["OUTPUT0"], _pair()["INPUT0"] * 2)
        await old.finished.wait()


async def test_failed_reload_keeps_the_old_version_serving(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "m", kt_config("addsub"))
    options = {
        **NO_ENDPOINTS,
        "model_control_mode": ModelControlMode.EXPLICIT,
        "load_models": ["m"],
    }
    async with run_server(repo, **options) as srv:
        (repo / "m" / "config.pbtxt").write_text("max_batch_size: oops")
        with pytest.raises(KernelError, match=r"config\.pbtxt:1:17"):
            await srv.server.load_model("m")
        assert srv.server.is_model_ready("m")
        response = await srv.server.infer_once(InferenceRequest("m", _pair()))
        assert response.error is None


async def test_poll_mode_loads_new_reloads_changed_and_unloads_removed(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "a", kt_config("identity"))
    options = {
        **NO_ENDPOINTS,
        "model_control_mode": ModelControlMode.POLL,
        "repository_poll_secs": 0.05,
    }

    async def until(predicate: Callable[[], bool]) -> None:
        for _ in range(400):  # bounded: at most ~20 s
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the repository poll did not act")

    async with run_server(repo, **options) as srv:
        server = srv.server
        assert server.is_model_ready("a")
        first = server.route("a")
        add_model(repo, "b", kt_config("identity"))
        await until(lambda: server.is_model_ready("b"))
        add_model(repo, "a", kt_config("addsub"))
        await until(lambda: server.route("a") is not first)
        response = await server.infer_once(InferenceRequest("a", _pair()))
        np.testing.assert_array_equal(response.outputs["OUTPUT0"], _pair()["INPUT0"] * 2)
        import shutil

        shutil.rmtree(repo / "b")
        await until(lambda: not server.is_model_ready("b"))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [3]),
        ("version_policy: { latest: { num_versions: 2 } }", [2, 3]),
        ("version_policy: { all: {} }", [1, 2, 3]),
        ("version_policy: { specific: { versions: [1, 3] } }", [1, 3]),
    ],
)
async def test_version_policies(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    policy: str,
    expected: list[int],
) -> None:
    add_model(repo, "m", kt_config(extra=policy), versions=(1, 2, 3))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        served = [int(r.version) for r in srv.server.repository_index() if r.state == "READY"]
        assert served == expected
        response = await srv.server.infer_once(InferenceRequest("m", _pair()))
        assert response.error is None
        assert srv.server.model_metadata("m").versions == tuple(str(v) for v in expected)
        with pytest.raises(KernelError, match="version 7 is not found"):
            srv.server.route("m", 7)


async def test_missing_version_folder_and_name_mismatch_are_reported(
    repo: Path, add_model: Callable[..., Path], kt_config: Callable[..., str]
) -> None:
    add_model(repo, "noversions", kt_config(), versions=())
    add_model(repo, "renamed", 'name: "other"\n' + kt_config())
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        rows = {r.name: r for r in srv.server.repository_index()}
        assert "at least one version must be available" in rows["noversions"].reason
        assert "field 'name'" in rows["renamed"].reason
        assert "config.pbtxt" in rows["renamed"].reason


async def test_auto_complete_fills_a_missing_config(
    repo: Path, add_model: Callable[..., Path]
) -> None:
    io = {
        "max_batch_size": 4,
        "behaviour": "addsub",
        "inputs": [["INPUT0", "TYPE_FP32", [4]], ["INPUT1", "TYPE_FP32", [4]]],
        "outputs": [["OUTPUT0", "TYPE_FP32", [4]], ["OUTPUT1", "TYPE_FP32", [4]]],
    }
    add_model(repo, "auto", 'backend: "kerneltest"\n', files={"1/io.json": json.dumps(io).encode()})
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        config = srv.server.model_config("auto")
        assert [i.name for i in config.input] == ["INPUT0", "INPUT1"]
        assert config.max_batch_size == 4
        response = await srv.server.infer_once(InferenceRequest("auto", _pair()))
        np.testing.assert_array_equal(response.outputs["OUTPUT1"], np.zeros((1, 4), np.float32))
    async with run_server(repo, auto_complete_config=False, **NO_ENDPOINTS) as srv:
        assert srv.server.model_config("auto").input == []
