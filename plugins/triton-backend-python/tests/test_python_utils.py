"""``triton_python_backend_utils`` and the plugin's kernel-free parts, without a server."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import triton_backend_python
import triton_python_backend_utils as pb_utils
from triton_backend_python._registry import MetricRegistry
from triton_backend_python._wire import INLINE_LIMIT, SlabPool, SlabReader, decode, encode


def test_public_surface() -> None:
    assert triton_backend_python.__all__ == ["PythonBackend", "metric_text"]
    for name in (
        "Tensor",
        "InferenceRequest",
        "InferenceResponse",
        "TritonError",
        "TritonModelException",
        "Logger",
        "MetricFamily",
        "ModelConfig",
        "get_input_tensor_by_name",
        "get_output_tensor_by_name",
        "get_input_config_by_name",
        "get_output_config_by_name",
        "triton_string_to_numpy",
        "numpy_to_triton_type",
        "triton_to_numpy_type",
        "load_model",
        "unload_model",
        "is_model_ready",
        "get_model_dir",
        "TRITONSERVER_RESPONSE_COMPLETE_FINAL",
        "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START",
        "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END",
        "TRITONSERVER_REQUEST_RELEASE_RESCHEDULE",
    ):
        assert name in pb_utils.__all__, name
        assert hasattr(pb_utils, name), name


def test_constants_are_tritons() -> None:
    assert pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END == 2
    assert pb_utils.TRITONSERVER_REQUEST_RELEASE_ALL == 1
    assert pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE == 2


def test_triton_error_codes() -> None:
    codes = ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE"]
    codes += ["UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED"]
    assert [getattr(pb_utils.TritonError, c) for c in codes] == list(range(8))
    error = pb_utils.TritonError("boom")
    assert error.message() == "boom" and error.code() == pb_utils.TritonError.INTERNAL
    error = pb_utils.TritonError("gone", pb_utils.TritonError.NOT_FOUND)
    assert error.code() == 2 and str(error) == "gone"
    assert pb_utils.TritonModelException("bad").message() == "bad"


def test_type_conversions() -> None:
    assert pb_utils.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb_utils.triton_string_to_numpy("TYPE_STRING") is np.object_
    assert pb_utils.numpy_to_triton_type(np.float32) == 11
    assert pb_utils.numpy_to_triton_type(np.dtype(np.object_)) == 13
    assert pb_utils.numpy_to_triton_type(np.bytes_) == 13
    assert pb_utils.triton_to_numpy_type(8) is np.int32
    assert pb_utils.triton_to_numpy_type(99) is None
    items = np.array([b"a", b"bc", "d"], dtype=np.object_)
    encoded = pb_utils.serialize_byte_tensor(items)
    assert encoded == b"\x01\x00\x00\x00a\x02\x00\x00\x00bc\x01\x00\x00\x00d"
    assert pb_utils.deserialize_bytes_tensor(encoded).tolist() == [b"a", b"bc", b"d"]


def test_tensor() -> None:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = pb_utils.Tensor("X", data)
    assert tensor.name() == "X"
    assert tensor.as_numpy() is data
    assert tensor.triton_dtype() == 11
    assert tensor.shape() == [2, 3]
    assert tensor.is_cpu()
    strings = pb_utils.Tensor("S", np.array(["a", "b"]))
    assert strings.as_numpy().dtype == np.object_
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.Tensor("C", np.zeros(2, np.complex64))


def test_read_only_input_gives_a_writable_copy() -> None:
    frozen = np.frombuffer(b"\x00" * 16, dtype=np.float32)
    tensor = pb_utils.Tensor._wrap("X", frozen)
    array = tensor.as_numpy()
    array += 1
    assert array.tolist() == [1, 1, 1, 1]
    assert tensor.as_numpy() is array
    assert frozen.tolist() == [0, 0, 0, 0]


def test_dlpack_round_trip() -> None:
    data = np.arange(4, dtype=np.int64)
    tensor = pb_utils.Tensor("X", data)
    back = pb_utils.Tensor.from_dlpack("Y", tensor.to_dlpack())
    assert back.name() == "Y" and back.as_numpy().tolist() == [0, 1, 2, 3]
    via_protocol = pb_utils.Tensor.from_dlpack("Z", data)
    assert np.shares_memory(via_protocol.as_numpy(), data)
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.Tensor("S", np.array([b"x"], np.object_)).to_dlpack()


def test_bf16_dlpack_round_trip_without_copies() -> None:
    # numpy's DLPack refuses bfloat16 (BufferError): Triton's documented route must not.
    data = np.array([1.5, -2.25, 3.0], dtype=ml_dtypes.bfloat16)
    tensor = pb_utils.Tensor("X", data)
    assert tensor.triton_dtype() == 14  # TYPE_BF16
    back = pb_utils.Tensor.from_dlpack("Y", tensor.to_dlpack())
    assert back._array.dtype == data.dtype and np.shares_memory(back._array, data)  # no copy
    assert back.as_numpy().astype(np.float32).tolist() == [1.5, -2.25, 3.0]
    floats = pb_utils.Tensor.from_dlpack("F", np.arange(3, dtype=np.float32).__dlpack__())
    assert floats.as_numpy().tolist() == [0.0, 1.0, 2.0]


def test_bf16_dlpack_with_torch() -> None:
    torch = pytest.importorskip("torch")
    data = np.array([1.5, -2.25], dtype=ml_dtypes.bfloat16)
    tensor = pb_utils.Tensor("X", data)
    as_torch = torch.from_dlpack(tensor.to_dlpack())
    assert as_torch.dtype == torch.bfloat16 and as_torch.tolist() == [1.5, -2.25]
    assert torch.from_dlpack(tensor).dtype == torch.bfloat16  # the __dlpack__ protocol
    doubled = as_torch * 2
    for source in (torch.utils.dlpack.to_dlpack(doubled), doubled):
        out = pb_utils.Tensor.from_dlpack("OUT", source)
        assert out.as_numpy().dtype == data.dtype
        assert out.as_numpy().astype(np.float32).tolist() == [3.0, -4.5]


def test_bytes_names_are_text() -> None:
    request = pb_utils.InferenceRequest(
        model_name=np.array([b"add_sub"], dtype=np.object_)[0],
        inputs=[],
        requested_output_names=[b"OUTPUT0", "OUTPUT1"],
    )
    assert request.model_name() == "add_sub"
    assert request.requested_output_names() == ["OUTPUT0", "OUTPUT1"]
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.get_model_dir()  # outside a served model


def test_requests_and_responses() -> None:
    tensor = pb_utils.Tensor("INPUT0", np.ones(2, np.float32))
    request = pb_utils.InferenceRequest(
        model_name="m",
        inputs=[tensor],
        requested_output_names=["OUTPUT0"],
        request_id="7",
        correlation_id="seq-1",
        flags=pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START,
        timeout=5,
        parameters={"a": 1, "b": "x"},
    )
    assert pb_utils.get_input_tensor_by_name(request, "INPUT0") is tensor
    assert pb_utils.get_input_tensor_by_name(request, "missing") is None
    assert request.request_id() == "7" and request.correlation_id() == "seq-1"
    assert request.flags() == 1 and request.timeout() == 5
    assert json.loads(request.parameters()) == {"a": 1, "b": "x"}
    assert request.requested_output_names() == ["OUTPUT0"]
    assert not request.is_cancelled()
    with pytest.raises(pb_utils.TritonModelException):
        request.get_response_sender()
    with pytest.raises(pb_utils.TritonModelException):
        request.exec()  # outside a served model
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.InferenceRequest(
            model_name="m", inputs=[], requested_output_names=[], parameters={"x": [1]}
        )
    with pytest.raises(pb_utils.TritonModelException):
        request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)

    response = pb_utils.InferenceResponse(output_tensors=[tensor], parameters={"k": True})
    assert not response.has_error() and response.error() is None
    assert pb_utils.get_output_tensor_by_name(response, "INPUT0") is tensor
    assert json.loads(response.parameters()) == {"k": True}
    failed = pb_utils.InferenceResponse(error=pb_utils.TritonError("no"))
    assert failed.has_error() and failed.error().message() == "no"  # type: ignore[union-attr]
    assert failed.output_tensors() == []


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, bool]] = []
        self.abandoned = 0

    def send(self, response: Any, final: bool) -> None:
        self.sent.append((response, final))

    def is_cancelled(self) -> bool:
        return False

    def abandon(self) -> None:
        self.abandoned += 1


def test_response_sender_rules() -> None:
    channel = _Recorder()
    sender = pb_utils.InferenceResponseSender(channel)
    with pytest.raises(pb_utils.TritonModelException):
        sender.send()  # neither a response nor the final flag
    response = pb_utils.InferenceResponse([])
    sender.send(response)
    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    assert channel.sent == [(response, False), (None, True)]
    with pytest.raises(pb_utils.TritonModelException, match="has been closed"):
        sender.send(response)
    del sender
    assert channel.abandoned == 0

    dropped = _Recorder()
    pb_utils.InferenceResponseSender(dropped).send(response)
    assert dropped.abandoned == 1  # released without the final flag


def test_model_config_auto_complete_rules() -> None:
    config = pb_utils.ModelConfig(
        json.dumps(
            {
                "name": "m",
                "max_batch_size": 4,
                "input": [{"name": "A", "data_type": "TYPE_FP32", "dims": [2]}],
                "output": [],
            }
        )
    )
    with pytest.raises(ValueError, match="max_batch_size 4"):
        config.set_max_batch_size(2)
    config.set_max_batch_size(8)
    config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [2]})
    with pytest.raises(ValueError, match="configuration expects datatype TYPE_FP32"):
        config.add_input({"name": "A", "data_type": "TYPE_INT32", "dims": [2]})
    with pytest.raises(ValueError, match="the model expects dims"):
        config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [3]})
    with pytest.raises(ValueError, match="contains property other than"):
        config.add_output({"name": "B", "data_type": "TYPE_FP32", "dims": [2], "optional": True})
    with pytest.raises(ValueError, match="missing 'dims' property"):
        config.add_output({"name": "B", "data_type": "TYPE_FP32"})
    config.add_output({"name": "B", "data_type": "TYPE_FP32", "dims": [2]})
    config.set_dynamic_batching()
    config.set_model_transaction_policy({"decoupled": True})
    with pytest.raises(ValueError, match="trying to change decoupled property"):
        config.set_model_transaction_policy({"decoupled": False})
    with pytest.raises(ValueError, match="other than 'decoupled'"):
        config.set_model_transaction_policy({"other": 1})
    done = config.as_dict()
    assert done["max_batch_size"] == 8
    assert [o["name"] for o in done["output"]] == ["B"]
    assert done["dynamic_batching"] == {}
    assert pb_utils.using_decoupled_model_transaction_policy(done)
    assert pb_utils.get_input_config_by_name(done, "A")["dims"] == [2]  # type: ignore[index]
    assert pb_utils.get_output_config_by_name(done, "missing") is None

    sequence = pb_utils.ModelConfig({"name": "s", "sequence_batching": {}})
    with pytest.raises(ValueError, match="sequence_batching"):
        sequence.set_dynamic_batching()


def test_logger_outside_a_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="triton_python_backend_utils"):
        pb_utils.Logger.log_info("hello")
        pb_utils.Logger.log_warn("careful")
        pb_utils.Logger.log("detail", pb_utils.Logger.VERBOSE)
    assert [(r.levelno, r.message) for r in caplog.records] == [
        (logging.INFO, "hello"),
        (logging.WARNING, "careful"),
        (logging.DEBUG, "detail"),
    ]


def test_metric_registry_text() -> None:
    registry = MetricRegistry()
    family = registry.create_family("hits_total", "Hits", 0)
    series = registry.create_metric(family, {"model": "m"}, None)
    registry.update(series, "increment", 2)
    registry.update(series, "increment", 1.5)
    assert registry.value(series) == 3.5
    gauge = registry.create_metric(registry.create_family("level", "Level", 1), {}, None)
    registry.update(gauge, "set", 7)
    histogram_family = registry.create_family("latency", "Latency", 2)
    histogram = registry.create_metric(histogram_family, {"a": 'q"x'}, [1.0, 5.0])
    for value in (0.5, 2.0, 9.0):
        registry.update(histogram, "observe", value)
    text = registry.render()
    assert '# HELP hits_total Hits\n# TYPE hits_total counter\nhits_total{model="m"} 3.5' in text
    assert "level 7" in text
    assert 'latency_bucket{a="q\\"x",le="1"} 1' in text
    assert 'latency_bucket{a="q\\"x",le="5"} 2' in text
    assert 'latency_bucket{a="q\\"x",le="+Inf"} 3' in text
    assert 'latency_sum{a="q\\"x"} 11.5' in text
    with pytest.raises(pb_utils.TritonModelException, match="already exists"):
        registry.create_family("hits_total", "Hits", 1)
    with pytest.raises(pb_utils.TritonModelException, match="invalid metric family name"):
        registry.create_family("bad name", "", 0)
    registry.release_metric(series)
    registry.release_family(family)
    assert "hits_total" not in registry.render()


@pytest.mark.parametrize("size", [4, INLINE_LIMIT])
def test_wire_round_trip(size: int) -> None:
    pool, reader = SlabPool(f"tkpy-test-{size}"), SlabReader()
    try:
        floats = np.arange(size, dtype=np.float32)
        strings = np.array([[b"a", b""]], dtype=np.object_)
        message = ("execute", 1, {"F": floats, "S": strings, "T": floats[::2]}, None, "x")
        frame = b"".join(bytes(p) for p in encode(message, pool))
        decoded = decode(bytearray(frame[4:]), reader)
        assert decoded[0:2] == ("execute", 1) and decoded[3:] == (None, "x")
        np.testing.assert_array_equal(decoded[2]["F"], floats)
        np.testing.assert_array_equal(decoded[2]["T"], floats[::2])
        assert decoded[2]["S"].tolist() == [[b"a", b""]]
        assert decoded[2]["F"].flags.writeable
        # A slab is reused once the reader released it.
        encode(message, pool)
        assert len(pool._slabs) == (1 if size == INLINE_LIMIT else 0)
    finally:
        pool.close()
        reader.close()
    assert not list(Path("/dev/shm").glob(f"tkpy-test-{size}-*"))
