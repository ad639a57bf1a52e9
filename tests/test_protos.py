"""The generated protobuf code: fresh, importable, and wire-compatible with protobuf."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import betterproto2
import grpclib.const
import pytest
from google.protobuf import descriptor_pb2, message_factory

from kernel._proto.grpc.health.v1 import (
    HealthBase,
    HealthCheckResponse,
    HealthCheckResponseServingStatus,
)
from kernel._proto.inference import (
    DataType,
    GrpcInferenceServiceBase,
    InferParameter,
    InferTensorContents,
    ModelConfig,
    ModelInferRequest,
    ModelInferRequestInferInputTensor,
    ModelInferRequestInferRequestedOutputTensor,
    ModelInferResponse,
    ModelInferResponseInferOutputTensor,
    ModelStreamInferResponse,
)

ROOT = Path(__file__).resolve().parent.parent

RPCS = {
    "ServerLive": "UNARY_UNARY",
    "ServerReady": "UNARY_UNARY",
    "ModelReady": "UNARY_UNARY",
    "ServerMetadata": "UNARY_UNARY",
    "ModelMetadata": "UNARY_UNARY",
    "ModelInfer": "UNARY_UNARY",
    "ModelStreamInfer": "STREAM_STREAM",
    "ModelConfig": "UNARY_UNARY",
    "ModelStatistics": "UNARY_UNARY",
    "RepositoryIndex": "UNARY_UNARY",
    "RepositoryModelLoad": "UNARY_UNARY",
    "RepositoryModelUnload": "UNARY_UNARY",
    "SystemSharedMemoryStatus": "UNARY_UNARY",
    "SystemSharedMemoryRegister": "UNARY_UNARY",
    "SystemSharedMemoryUnregister": "UNARY_UNARY",
    "CudaSharedMemoryStatus": "UNARY_UNARY",
    "CudaSharedMemoryRegister": "UNARY_UNARY",
    "CudaSharedMemoryUnregister": "UNARY_UNARY",
    "TraceSetting": "UNARY_UNARY",
    "LogSettings": "UNARY_UNARY",
}


def _pb_class(message_type: Any) -> Any:
    """The C protobuf message class for a generated betterproto2 class."""
    return message_factory.GetMessageClass(message_type.DESCRIPTOR)


def test_generated_code_is_not_stale() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_generated_grpc_package_does_not_shadow_grpc() -> None:
    # health.proto generates a package named "grpc": it must stay inside kernel._proto.
    spec = importlib.util.find_spec("grpc")
    assert spec is None or "_proto" not in Path(spec.origin or "").parts
    assert importlib.util.find_spec("kernel._proto.grpc.health.v1") is not None


def test_inference_service_has_every_triton_rpc() -> None:
    class Servicer(GrpcInferenceServiceBase):
        pass

    mapping = Servicer().__mapping__()
    expected = {
        f"/inference.GRPCInferenceService/{name}": getattr(grpclib.const.Cardinality, kind)
        for name, kind in RPCS.items()
    }
    assert {path: handler.cardinality for path, handler in mapping.items()} == expected
    stream = mapping["/inference.GRPCInferenceService/ModelStreamInfer"]
    assert (stream.request_type, stream.reply_type) == (
        ModelInferRequest,
        ModelStreamInferResponse,
    )


def test_health_service() -> None:
    class Servicer(HealthBase):
        pass

    mapping = Servicer().__mapping__()
    assert {path: handler.cardinality for path, handler in mapping.items()} == {
        "/grpc.health.v1.Health/Check": grpclib.const.Cardinality.UNARY_UNARY,
        "/grpc.health.v1.Health/Watch": grpclib.const.Cardinality.UNARY_STREAM,
    }
    serving = HealthCheckResponse(status=HealthCheckResponseServingStatus.SERVING)
    assert bytes(serving) == b"\x08\x01"


def _request() -> ModelInferRequest:
    return ModelInferRequest(
        model_name="simple",
        model_version="1",
        id="req-7",
        parameters={"sequence_id": InferParameter(int64_param=-42)},
        inputs=[
            ModelInferRequestInferInputTensor(
                name="INPUT0",
                datatype="FP32",
                shape=[1, 4],
                parameters={"binary_data_size": InferParameter(uint64_param=16)},
            ),
            ModelInferRequestInferInputTensor(
                name="INPUT1",
                datatype="INT64",
                shape=[2],
                contents=InferTensorContents(int64_contents=[-1, 2**40]),
            ),
            ModelInferRequestInferInputTensor(
                name="TEXT",
                datatype="BYTES",
                shape=[2],
                contents=InferTensorContents(bytes_contents=[b"ab", b""]),
            ),
        ],
        outputs=[
            ModelInferRequestInferRequestedOutputTensor(
                name="OUTPUT0",
                parameters={"classification": InferParameter(int64_param=3)},
            )
        ],
        raw_input_contents=[bytes(range(16)), b""],
    )


def test_model_infer_request_bytes_match_c_protobuf() -> None:
    request = _request()
    wire = bytes(request)
    pb = _pb_class(ModelInferRequest).FromString(wire)
    assert pb.model_name == "simple" and pb.id == "req-7"
    assert pb.parameters["sequence_id"].int64_param == -42
    assert pb.inputs[0].parameters["binary_data_size"].WhichOneof("parameter_choice") == (
        "uint64_param"
    )
    assert list(pb.inputs[1].contents.int64_contents) == [-1, 2**40]
    assert list(pb.inputs[2].contents.bytes_contents) == [b"ab", b""]
    assert list(pb.raw_input_contents) == [bytes(range(16)), b""]
    assert pb.outputs[0].parameters["classification"].int64_param == 3
    # Same bytes both ways (one entry per map, so map order cannot differ).
    assert pb.SerializeToString(deterministic=True) == wire
    assert ModelInferRequest.parse(pb.SerializeToString()) == request


def test_oneof_member_at_default_value_is_kept() -> None:
    # sequence_start=false must reach the server as "set to false", not "unset".
    param = InferParameter(bool_param=False)
    assert betterproto2.which_one_of(param, "parameter_choice") == ("bool_param", False)
    pb = _pb_class(InferParameter).FromString(bytes(param))
    assert pb.WhichOneof("parameter_choice") == "bool_param"
    back = InferParameter.parse(pb.SerializeToString())
    assert betterproto2.which_one_of(back, "parameter_choice") == ("bool_param", False)
    assert betterproto2.which_one_of(InferParameter(), "parameter_choice") == ("", None)


def test_stream_response_round_trips_through_c_protobuf() -> None:
    response = ModelStreamInferResponse(
        infer_response=ModelInferResponse(
            model_name="simple",
            model_version="1",
            id="req-7",
            parameters={"triton_final_response": InferParameter(bool_param=True)},
            outputs=[
                ModelInferResponseInferOutputTensor(name="OUTPUT0", datatype="FP32", shape=[1, 4])
            ],
            raw_output_contents=[b"\x00" * 16],
        )
    )
    wire = bytes(response)
    pb = _pb_class(ModelStreamInferResponse).FromString(wire)
    assert pb.error_message == ""
    assert pb.infer_response.parameters["triton_final_response"].bool_param is True
    assert pb.SerializeToString(deterministic=True) == wire
    assert ModelStreamInferResponse.parse(wire) == response
    error = ModelStreamInferResponse(error_message="boom")
    assert _pb_class(ModelStreamInferResponse).FromString(bytes(error)).error_message == "boom"


def test_model_config_descriptor_and_enum_values() -> None:
    assert ModelConfig.DESCRIPTOR.full_name == "inference.ModelConfig"
    assert [(d.name, d.value) for d in DataType] == [
        ("TYPE_INVALID", 0),
        ("TYPE_BOOL", 1),
        ("TYPE_UINT8", 2),
        ("TYPE_UINT16", 3),
        ("TYPE_UINT32", 4),
        ("TYPE_UINT64", 5),
        ("TYPE_INT8", 6),
        ("TYPE_INT16", 7),
        ("TYPE_INT32", 8),
        ("TYPE_INT64", 9),
        ("TYPE_FP16", 10),
        ("TYPE_FP32", 11),
        ("TYPE_FP64", 12),
        ("TYPE_STRING", 13),
        ("TYPE_BF16", 14),
    ]


def _shape(file: Any) -> dict[str, Any]:
    """Names, numbers, types and oneofs of every message, enum and rpc of a file."""
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    out: dict[str, Any] = {
        "package": proto.package,
        "dependency": list(proto.dependency),
    }

    def message(m: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        out[prefix + m.name] = [
            (
                f.name,
                f.number,
                f.label,
                f.type,
                f.type_name,
                m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None,
            )
            for f in m.field
        ]
        for e in m.enum_type:
            out[prefix + m.name + "." + e.name] = [(v.name, v.number) for v in e.value]
        for n in m.nested_type:
            message(n, prefix + m.name + ".")

    for e in proto.enum_type:
        out[e.name] = [(v.name, v.number) for v in e.value]
    for m in proto.message_type:
        message(m, "")
    for s in proto.service:
        out["service " + s.name] = [
            (
                x.name,
                x.input_type,
                x.output_type,
                x.client_streaming,
                x.server_streaming,
            )
            for x in s.method
        ]
    return out


def test_protos_match_tritonclient() -> None:
    """Field for field, the same protocol as the stock Triton client (when installed)."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    ours_service = ModelInferRequest.DESCRIPTOR.file
    ours_config = ModelConfig.DESCRIPTOR.file
    assert _shape(ours_service) == _shape(service_pb2.DESCRIPTOR)
    assert _shape(ours_config) == _shape(model_config_pb2.DESCRIPTOR)
