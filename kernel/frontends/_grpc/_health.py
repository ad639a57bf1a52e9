"""The standard ``grpc.health.v1.Health`` service, answering with the server's readiness.

As in Triton, every service name gets the server's status: SERVING when it is ready.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from kernel._proto.grpc.health.v1 import (
    HealthBase,
    HealthCheckRequest,
    HealthCheckResponse,
    HealthCheckResponseServingStatus,
)
from kernel._server import InferenceServer

__all__ = ["HealthServicer"]

_WATCH_PERIOD_S = 0.5


class HealthServicer(HealthBase):  # type: ignore[misc]  # generated code is not type-checked
    def __init__(self, server: InferenceServer) -> None:
        self._server = server

    def _status(self) -> HealthCheckResponseServingStatus:
        if self._server.is_ready():
            return HealthCheckResponseServingStatus.SERVING
        return HealthCheckResponseServingStatus.NOT_SERVING

    async def check(self, message: HealthCheckRequest) -> HealthCheckResponse:
        return HealthCheckResponse(status=self._status())

    async def watch(self, message: HealthCheckRequest) -> AsyncIterator[HealthCheckResponse]:
        """The status now, then each change (checked twice a second) until the client leaves."""
        last = None
        while True:
            status = self._status()
            if status != last:
                last = status
                yield HealthCheckResponse(status=status)
            await anyio.sleep(_WATCH_PERIOD_S)
