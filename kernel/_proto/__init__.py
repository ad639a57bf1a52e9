"""Code generated from ``protos/*.proto`` by ``python protos/generate.py``.

Do not edit anything in this package by hand: change the .proto files and
regenerate. Subpackages: ``inference`` (Triton's GRPCInferenceService and
ModelConfig) and ``grpc.health.v1`` (the standard gRPC health service).
"""
