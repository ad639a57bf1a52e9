"""The corners of Triton's Python-backend API (issue 15 point 4), through the real tritonclient,
in both execution modes: ``get_model_dir``, BLS to a model named by ``bytes``, streaming
``async_exec(decoupled=True)`` and its ``cancel()``, ``unload_dependents``, the one-response rule
of non-decoupled models using the response sender, and BLS outside ``execute``.

What each expects was checked against Triton 2.51 (``/work/triton-reference/run-triton``):
``get_model_dir()`` is the version folder, BLS in ``initialize`` fails the load with "BLS is
only supported during the 'execute' function.", and the response sender's messages.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kernel import ModelControlMode
from kernel.testing import RunningServer, ServerThread
from kernel.testing.clients import TritonClients

MODELS = [
    "python_api",
    "python_add_sub",
    "python_strings",
    "ensemble_strings",
    "python_wait_cancel",
    "bls_stream_cancel",
    "python_readiness",
    "python_bf16",
    "python_iterative",
    "python_iterative_decoupled",
]


HERE = Path(__file__).parent
EXAMPLES = HERE.resolve().parents[2] / "examples" / "model_repository"


def _make_repository(root: Path) -> Path:
    for name in MODELS:
        source = HERE / "models" / name
        shutil.copytree(source if source.is_dir() else EXAMPLES / name, root / name)
    (root / "ensemble_strings" / "1").mkdir()
    return root


@pytest.fixture(scope="module")
def api_server(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server (explicit model control, everything loaded) in the module's execution mode."""
    repository = _make_repository(tmp_path_factory.mktemp(f"api_{mode}"))
    with ServerThread(
        repository,
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=["*"],
        backend_config={"python": {"execution-mode": mode}},
    ) as running:
        yield running


def _bytes(*values: str) -> np.ndarray[Any, Any]:
    return np.array([v.encode() for v in values], dtype=np.object_)


def _client(server: RunningServer, protocol: str) -> Any:
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http_url)
    return grpcclient.InferenceServerClient(server.grpc_url)


def _infer(server: RunningServer, protocol: str, model: str, arrays: dict[str, Any]) -> Any:
    module: Any = httpclient if protocol == "http" else grpcclient
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == np.object_ else "INT32"
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return _client(server, protocol).infer(model, inputs)


def _api(server: RunningServer, protocol: str, mode: str, name: str | None = None) -> str:
    arrays = {"MODE": _bytes(mode)}
    if name is not None:
        arrays["NAME"] = _bytes(name)
    result = _infer(server, protocol, "python_api", arrays)
    return bytes(result.as_numpy("TEXT")[0]).decode()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_get_model_dir_is_the_version_folder(api_server: RunningServer, protocol: str) -> None:
    model_dir, model_repository, model_file = json.loads(_api(api_server, protocol, "model_dir"))
    assert Path(model_dir).parts[-2:] == ("python_api", "1")
    assert model_dir == str(Path(model_file).parent)
    assert model_repository == str(Path(model_dir).parent)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bls_to_a_model_named_by_bytes(api_server: RunningServer, protocol: str) -> None:
    assert json.loads(_api(api_server, protocol, "bls_bytes", "python_add_sub")) == [2, 4, 6, 8]


@pytest.mark.parametrize("how", ["sender_one", "sender_one_final"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_non_decoupled_model_answers_once_through_its_sender(
    api_server: RunningServer, protocol: str, how: str
) -> None:
    assert _api(api_server, protocol, how) == ("one" if how == "sender_one" else "one final")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_final_flag_without_a_response_is_triton_s_error(
    api_server: RunningServer, protocol: str
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        _api(api_server, protocol, "sender_zero")
    message = raised.value.message()
    assert "Failed to process the request(s) for model 'python_api_0" in message
    assert (
        "TritonModelException: Unable to send response. Non-decoupled model cannot send complete"
        " final before sending a response." in message
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_second_response_is_refused_with_triton_s_message(
    api_server: RunningServer, protocol: str
) -> None:
    assert _api(api_server, protocol, "sender_two") == (
        "refused: Unable to send response. Non-decoupled model cannot send more than one response."
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_async_exec_decoupled_streams_and_cancels(api_server: RunningServer, protocol: str) -> None:
    # python_wait_cancel sends 5, then waits for its request to be cancelled. Had async_exec
    # waited for the whole stream, the caller would only see 5 and -1 after 20 seconds.
    result = _infer(api_server, protocol, "bls_stream_cancel", {"IN": np.array([5], np.int32)})
    seen = [bytes(s).decode() for s in result.as_numpy("SEEN")]
    assert seen == ["5", "error: the BLS request was cancelled"]


def test_bls_in_initialize_fails_the_load(api_server: RunningServer) -> None:
    config = {
        "backend": "python",
        "input": [{"name": "IN", "data_type": "TYPE_INT32", "dims": [1]}],
        "output": [{"name": "OUT", "data_type": "TYPE_INT32", "dims": [1]}],
    }
    code = (
        "import numpy as np\n"
        "import triton_python_backend_utils as pb_utils\n"
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        pb_utils.InferenceRequest(model_name='python_add_sub', inputs=[],\n"
        "                                  requested_output_names=[]).exec()\n"
        "    def execute(self, requests):\n"
        "        return [None for _ in requests]\n"
    )
    client = _client(api_server, "http")
    with pytest.raises(InferenceServerException) as raised:
        client.load_model(
            "bls_in_initialize", config=json.dumps(config), files={"file:1/model.py": code.encode()}
        )
    assert "BLS is only supported during the 'execute' function." in raised.value.message()
    assert not client.is_model_ready("bls_in_initialize")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unload_model_with_dependents(api_server: RunningServer, protocol: str) -> None:
    client = _client(api_server, protocol)
    assert client.is_model_ready("ensemble_strings") and client.is_model_ready("python_strings")
    assert _api(api_server, protocol, "unload_deps", "ensemble_strings") == "unloaded"
    assert not client.is_model_ready("ensemble_strings")
    assert not client.is_model_ready("python_strings")  # the composing model went too
    client.load_model("ensemble_strings")  # brings its composing model back
    assert client.is_model_ready("python_strings")


@pytest.mark.parametrize(
    ("state", "ready"),
    [
        ("true", True),
        ("false", False),
        ("raise", False),
        ("non_boolean", False),
        ("async_true", True),
    ],
)
def test_is_ready_hook_answers_the_ready_endpoints(
    api_server: RunningServer, state: str, ready: bool
) -> None:
    _infer(api_server, "grpc", "python_readiness", {"STATE": _bytes(state)})
    for protocol in ("http", "grpc"):
        assert _client(api_server, protocol).is_model_ready("python_readiness") is ready
    assert _client(api_server, "http").is_model_ready("python_api")  # no hook: ready
    assert _api(api_server, "grpc", "ready", "python_readiness") == str(ready)  # from a model


def test_is_ready_hook_too_slow_is_not_ready(api_server: RunningServer) -> None:
    _infer(api_server, "http", "python_readiness", {"STATE": _bytes("slow")})
    client = _client(api_server, "grpc")
    assert client.is_model_ready("python_readiness") is False  # no answer within 5 s
    _infer(api_server, "http", "python_readiness", {"STATE": _bytes("true")})
    assert client.is_model_ready("python_readiness") is True


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bf16_through_dlpack(api_server: RunningServer, protocol: str) -> None:
    module: Any = httpclient if protocol == "http" else grpcclient
    values = np.array([1.5, -2.25, 3.0, 0.0078125], dtype=ml_dtypes.bfloat16)
    tensor = module.InferInput("IN", [4], "BF16")
    tensor.set_data_from_numpy(values)
    result = _client(api_server, protocol).infer("python_bf16", [tensor])
    out = result.as_numpy("OUT")
    np.testing.assert_array_equal(out.astype(np.float32), values.astype(np.float32) * 2)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_rescheduled_request_executes_again(api_server: RunningServer, protocol: str) -> None:
    # Two requests at once, each rescheduled until it ran IN times; START only on the first run.
    module: Any = httpclient if protocol == "http" else grpcclient
    client = _client(api_server, protocol)
    for runs in (1, 3):
        tensor = module.InferInput("IN", [1], "INT32")
        tensor.set_data_from_numpy(np.array([runs], np.int32))
        result = client.infer("python_iterative", [tensor], request_id=f"{protocol}-{runs}")
        assert result.as_numpy("RUNS").tolist() == [runs]
        assert result.as_numpy("STARTS").tolist() == [1]


def test_rescheduled_decoupled_request_streams(api_server: RunningServer) -> None:
    results = TritonClients(api_server).stream(
        "python_iterative_decoupled", {"IN": np.array([3], np.int32)}
    )
    assert [int(r.as_numpy("OUT")[0]) for r in results] == [2, 1, 0]
    # response parameters travel with each streamed response (gRPC: typed InferParameter)
    parameters = [r.get_response().parameters for r in results]
    assert [p["remaining"].int64_param for p in parameters] == [2, 1, 0]
    assert all(p["last"].HasField("bool_param") and not p["last"].bool_param for p in parameters)


def test_rescheduling_without_iterative_sequence_fails(api_server: RunningServer) -> None:
    with pytest.raises(InferenceServerException) as raised:
        _api(api_server, "http", "reschedule")
    assert "not configured with iterative sequence batching" in raised.value.message()


@pytest.mark.parametrize("how", ["params", "sender_params"])
def test_response_parameters_on_both_protocols(api_server: RunningServer, how: str) -> None:
    expected = {"b": True, "i": 7, "s": "x", "f": 1.5} if how == "params" else {"via": "sender"}
    arrays = {"MODE": _bytes(how)}
    http = _infer(api_server, "http", "python_api", arrays).get_response()
    assert http["parameters"] == expected  # HTTP: the response's JSON "parameters"
    grpc = _infer(api_server, "grpc", "python_api", arrays).get_response().parameters
    typed = {
        key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in grpc.items()
    }
    assert typed == expected
    if how == "params":
        kinds = {key: value.WhichOneof("parameter_choice") for key, value in grpc.items()}
        assert kinds == {
            "b": "bool_param",
            "i": "int64_param",
            "s": "string_param",
            "f": "double_param",
        }


def test_bls_response_parameters_are_json(api_server: RunningServer) -> None:
    text = _api(api_server, "grpc", "bls_params")
    assert json.loads(text) == {"remaining": 0, "last": False}


def test_bls_in_finalize_is_refused(api_server: RunningServer, tmp_path: Path) -> None:
    report = tmp_path / "finalize.txt"
    config = {
        "backend": "python",
        "input": [{"name": "IN", "data_type": "TYPE_INT32", "dims": [1]}],
        "output": [{"name": "OUT", "data_type": "TYPE_INT32", "dims": [1]}],
        "parameters": {"REPORT": {"string_value": str(report)}},
    }
    code = (
        "import json\n"
        "import triton_python_backend_utils as pb_utils\n"
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        config = json.loads(args['model_config'])\n"
        "        self.report = config['parameters']['REPORT']['string_value']\n"
        "    def execute(self, requests):\n"
        "        return [None for _ in requests]\n"
        "    def finalize(self):\n"
        "        try:\n"
        "            pb_utils.InferenceRequest(model_name='python_add_sub', inputs=[],\n"
        "                                      requested_output_names=[]).exec()\n"
        "            text = 'allowed'\n"
        "        except pb_utils.TritonModelException as exc:\n"
        "            text = exc.message()\n"
        "        with open(self.report, 'w') as f:\n"
        "            f.write(text)\n"
    )
    client = _client(api_server, "http")
    client.load_model(
        "bls_in_finalize", config=json.dumps(config), files={"file:1/model.py": code.encode()}
    )
    client.unload_model("bls_in_finalize")
    for _ in range(200):  # the unload returns once the model finalized; allow the file a moment
        if report.exists() and report.read_text():
            break
        time.sleep(0.05)
    assert report.read_text() == "BLS is only supported during the 'execute' function."
