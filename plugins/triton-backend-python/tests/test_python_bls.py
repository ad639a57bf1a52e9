"""Python models calling other models (BLS) and controlling models, in both execution modes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from kernel.testing import RunningServer

A = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
B = np.array([4.0, 3.0, 2.0, 1.0], dtype=np.float32)


def _name(model: str) -> np.ndarray[Any, Any]:
    return np.array([model.encode()], dtype=np.object_)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sync_bls(served: RunningServer, helpers: Any, protocol: str) -> None:
    infer = helpers.http_infer if protocol == "http" else helpers.grpc_infer
    result = infer(
        served, "bls_sync", {"MODEL_NAME": _name("python_add_sub"), "INPUT0": A, "INPUT1": B}
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_sync_bls_to_unknown_model(served: RunningServer, helpers: Any) -> None:
    with pytest.raises(InferenceServerException) as raised:
        helpers.http_infer(
            served, "bls_sync", {"MODEL_NAME": _name("no_such_model"), "INPUT0": A, "INPUT1": B}
        )
    assert "no_such_model" in raised.value.message()


def test_sync_bls_error_reaches_the_caller(served: RunningServer, helpers: Any) -> None:
    # python_raise has no OUTPUT1: the server refuses the BLS request, bls_sync raises that.
    with pytest.raises(InferenceServerException) as raised:
        helpers.grpc_infer(
            served, "bls_sync", {"MODEL_NAME": _name("python_raise"), "INPUT0": A, "INPUT1": B}
        )
    message = raised.value.message()
    assert "Failed to process the request(s) for model 'bls_sync_0_0'" in message
    assert "unexpected inference output 'OUTPUT1' for model 'python_raise'" in message


def test_async_bls_with_decoupled_stream(served: RunningServer, helpers: Any) -> None:
    result = helpers.grpc_infer(served, "bls_async", {"INPUT0": A, "INPUT1": B})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    assert result.as_numpy("COUNT").tolist() == [3]


def test_sync_bls_on_decoupled_model(served: RunningServer, helpers: Any) -> None:
    values = np.array([5, 6, 7, 8], dtype=np.int32)
    result = helpers.http_infer(served, "bls_decoupled_sync", {"IN": values})
    assert result.as_numpy("SUM").tolist() == [26]
    assert result.as_numpy("COUNT").tolist() == [4]


def test_bls_callee_cannot_change_the_callers_arrays(served: RunningServer, helpers: Any) -> None:
    result = helpers.grpc_infer(served, "bls_shield", {"INPUT0": A})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + 1)
    np.testing.assert_array_equal(result.as_numpy("MINE"), A)


def test_model_control_from_a_model(served: RunningServer, helpers: Any) -> None:
    def act(action: str, model: str) -> bool:
        result = helpers.grpc_infer(
            served, "python_loader", {"ACTION": _name(action), "MODEL": _name(model)}
        )
        return bool(result.as_numpy("READY")[0])

    assert act("ready", "python_strings") is True
    assert act("unload", "python_strings") is False
    assert served.server.is_model_ready("python_strings") is False
    assert act("load", "python_strings") is True
    text = np.array([[b"again"]], dtype=np.object_)
    result = helpers.http_infer(served, "python_strings", {"TEXT": text})
    assert result.as_numpy("UPPER").tolist() == [[b"AGAIN"]]
    with pytest.raises(InferenceServerException) as raised:
        act("load", "no_such_model")
    assert "no_such_model" in raised.value.message()
