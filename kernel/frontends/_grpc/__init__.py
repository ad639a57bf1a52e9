"""The gRPC endpoint: Triton's ``inference.GRPCInferenceService`` and ``grpc.health.v1``."""

from kernel.frontends._grpc._frontend import GrpcFrontend as GrpcFrontend

__all__ = ["GrpcFrontend"]
