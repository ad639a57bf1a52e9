"""The HTTP/REST endpoint: KServe v2 with Triton's extensions (binary tensors, statistics,
model repository, shared memory, trace and logging settings)."""

from kernel.frontends._http._frontend import HttpFrontend as HttpFrontend

__all__ = ["HttpFrontend"]
