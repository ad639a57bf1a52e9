"""Routing and handlers of the KServe v2 REST API with Triton's extensions.

Transport-neutral: :meth:`HttpApp.handle` takes an :class:`HttpRequest` (method, path, headers,
the whole body) and returns a :class:`Reply` (status, headers, body buffers), so the protocol
logic is tested without sockets and the server that moves bytes can change. Every
:class:`~kernel._errors.KernelError` becomes Triton's ``{"error": "<message>"}`` with the status
from :func:`kernel._errors.http_status`, here and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any
from urllib.parse import unquote

import anyio.to_thread
import orjson

from kernel._config_text import config_to_json
from kernel._errors import KernelError, Status, http_status
from kernel._server import EXTENSIONS, InferenceServer
from kernel._statistics import Duration, ModelStatistics
from kernel.frontends._access import SHM_REFUSED, HeaderForwarding, Restrictions
from kernel.frontends._http_server._types import HttpRequest, Reply, StreamingReply

from ._compression import compress, decompress, response_encoding
from ._generate import decode_generate, generate, generate_stream
from ._infer import DecodePlans, decode_request, encode_response

__all__ = ["HttpApp", "HttpRequest", "Reply"]

log = logging.getLogger("kernel.frontends.http")


_JSON = (b"content-type", b"application/json")
_TEXT = (b"content-type", b"text/plain")
_OCTETS = (b"content-type", b"application/octet-stream")
_EMPTY: list[bytes | memoryview] = []


def json_reply(value: Any, status: int = 200) -> Reply:
    return Reply(status, [_JSON], [orjson.dumps(value)])


def error_reply(exc: KernelError) -> Reply:
    return Reply(http_status(exc.status), [_JSON], [orjson.dumps({"error": exc.message})])


def _empty(status: int = 200, content_type: tuple[bytes, bytes] = _JSON) -> Reply:
    return Reply(status, [content_type], _EMPTY)


_MAX_INFER_PATHS = 256
"""How many infer paths an app remembers (a path names the model: a client sends few)."""

_NOT_FOUND = Reply(404, [_TEXT], [b'{"error":"Not Found"}'])


def _not_allowed(allow: bytes) -> Reply:
    """405 with the ``Allow`` header RFC 9110 requires (HEAD is served wherever GET is)."""
    return Reply(405, [_TEXT, (b"allow", allow)], [b'{"error":"Method Not Allowed"}'])


_NOT_ALLOWED = _not_allowed(b"GET, HEAD")
_NOT_ALLOWED_POST = _not_allowed(b"POST")
_NOT_ALLOWED_GET_POST = _not_allowed(b"GET, HEAD, POST")


def _bad_json(exc: orjson.JSONDecodeError) -> KernelError:
    return KernelError(Status.INVALID_ARG, f"failed to parse the request JSON buffer: {exc}")


def _json_body(body: bytes | bytearray, *, optional: bool = True) -> dict[str, Any]:
    """The request body as a JSON object (``{}`` for an empty optional body)."""
    if not body and optional:
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad_json(exc) from None
    if not isinstance(value, dict):
        raise KernelError(Status.INVALID_ARG, "attempt to access JSON non-object as object")
    return value


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def _statistics_json(stats: ModelStatistics) -> dict[str, Any]:
    return {
        "name": stats.name,
        "version": str(stats.version),
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.fail),
            "queue": _duration(stats.queue),
            "compute_input": _duration(stats.compute_input),
            "compute_infer": _duration(stats.compute_infer),
            "compute_output": _duration(stats.compute_output),
            "cache_hit": _duration(stats.cache_hit),
            "cache_miss": _duration(stats.cache_miss),
        },
        "response_stats": {
            str(index): {
                "compute_infer": _duration(r.compute_infer),
                "compute_output": _duration(r.compute_output),
                "success": _duration(r.success),
                "fail": _duration(r.fail),
                "empty_response": _duration(r.empty_response),
                "cancel": _duration(r.cancel),
            }
            for index, r in sorted(stats.response_stats.items())
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(batch.compute_input),
                "compute_infer": _duration(batch.compute_infer),
                "compute_output": _duration(batch.compute_output),
            }
            for size, batch in sorted(stats.batch_stats.items())
        ],
        "memory_usage": [
            {"type": m.type, "id": m.id, "byte_size": m.byte_size} for m in stats.memory_usage
        ],
    }


_MODEL_ACTIONS = {
    "": "metadata",
    "ready": "health",
    "config": "model-config",
    "stats": "statistics",
    "infer": "inference",
    "generate": "inference",
    "generate_stream": "inference",
    "trace/setting": "trace",
}
_SECTIONS = {
    "health": "health",
    "repository": "model-repository",
    "systemsharedmemory": "shared-memory",
    "cudasharedmemory": "shared-memory",
    "trace": "trace",
    "logging": "logging",
}


def _api_group(parts: list[str]) -> str | None:
    """The restricted API group (tritonserver's ``--http-restricted-api`` names) of a path
    split at ``/``; ``None`` for a path no group covers."""
    n = len(parts)
    if n == 2:
        return "metadata"
    if parts[2] != "models":
        return _SECTIONS.get(parts[2])
    if n == 4 and parts[3] == "stats":
        return "statistics"
    rest = parts[4:]
    if len(rest) >= 2 and rest[0] == "versions":
        rest = rest[2:]
    return _MODEL_ACTIONS.get("/".join(rest))


class HttpApp:
    """The REST API of one server."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        options = server.options
        self.max_body = options.http_max_input_bytes
        # None when no API is restricted: one identity check per request
        self._restrictions = Restrictions(options.http_restricted_api, grpc=False) or None
        self._forwarding = HeaderForwarding.compile(
            options.http_header_forward_pattern, "--http-header-forward-pattern"
        )
        self._allow_shm = options.allow_client_shm
        self._plans = DecodePlans()
        # the paths of recent infer requests: path -> (model name, version string); only when
        # no API is restricted (a restriction is checked on every request)
        self._infer_paths: dict[str, tuple[str, str]] = {}

    def close(self) -> None:
        """Nothing to release (kept for the transport's stop)."""

    async def handle(self, request: HttpRequest) -> Reply | StreamingReply:
        """Answer one request; never raises for a client error."""
        try:
            route = self._infer_paths.get(request.path)
            if route is not None and request.method == "POST":
                return await self._infer(request, route[0], route[1])
            return await self._dispatch(request)
        except KernelError as exc:
            return error_reply(exc)
        except Exception as exc:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return error_reply(KernelError.wrap(exc))

    # -- routing ------------------------------------------------------------------------------

    async def _dispatch(self, request: HttpRequest) -> Reply | StreamingReply:
        path = request.path
        parts = [unquote(p) for p in path.split("/")] if "%" in path else path.split("/")
        # parts[0] is the empty string before the leading "/".
        n = len(parts)
        if n < 2 or parts[0] or parts[1] != "v2":
            return _NOT_FOUND
        if self._restrictions is not None:
            refusal = self._restrictions.refusal(_api_group(parts), request.headers)
            if refusal is not None:
                return Reply(403, [_TEXT], [orjson.dumps({"error": refusal})])
        method = request.method
        if n >= 4 and parts[2] == "models":
            return await self._model_route(request, parts)
        if n == 2:
            return self._server_metadata() if method == "GET" else _NOT_ALLOWED
        section = parts[2]
        if section == "health" and n == 4 and parts[3] in ("live", "ready"):
            if method != "GET":
                return _NOT_ALLOWED
            ok = self.server.live if parts[3] == "live" else self.server.is_ready()
            return _empty(200 if ok else 400, _TEXT)
        if section == "repository":
            return await self._repository_route(request, parts)
        if section in ("systemsharedmemory", "cudasharedmemory"):
            if not self._allow_shm:
                raise KernelError(Status.UNSUPPORTED, SHM_REFUSED)
            return self._shared_memory_route(request, parts)
        if section == "trace" and n == 4 and parts[3] == "setting":
            return self._trace(request, "")
        if section == "logging" and n == 3:
            return self._logging(request)
        return _NOT_FOUND

    async def _model_route(self, request: HttpRequest, parts: list[str]) -> Reply | StreamingReply:
        method = request.method
        n = len(parts)
        if n == 4 and parts[3] == "stats":
            if method != "GET":
                return _NOT_ALLOWED
            return self._statistics("", "")
        name = parts[3]
        version = ""
        rest = parts[4:]
        if len(rest) >= 2 and rest[0] == "versions":
            version = rest[1]
            if not version.isdigit():
                return _NOT_FOUND
            rest = rest[2:]
        action = "/".join(rest)
        if not name or (version and action == "trace/setting"):
            return _NOT_FOUND
        if action == "infer":
            if method != "POST":
                return _NOT_ALLOWED_POST
            paths = self._infer_paths
            if self._restrictions is None and len(paths) < _MAX_INFER_PATHS:
                paths[request.path] = (name, version)
            return await self._infer(request, name, version)
        if action in ("generate", "generate_stream"):
            if method != "POST":
                return _NOT_ALLOWED_POST
            return await self._generate(request, name, version, action == "generate_stream")
        if action == "trace/setting":
            return self._trace(request, name)
        if method != "GET":
            return _NOT_ALLOWED if action in ("", "ready", "config", "stats") else _NOT_FOUND
        server = self.server
        if action == "":
            return json_reply(self._model_metadata(name, version))
        if action == "ready":
            if not await server.model_ready(name, version):
                return Reply(400, [_TEXT], [b'{"error":"Model version not ready"}'])
            return _empty(200, _TEXT)
        if action == "config":
            return json_reply(config_to_json(server.model_config(name, version)))
        if action == "stats":
            return self._statistics(name, version)
        return _NOT_FOUND

    # -- server and model metadata ------------------------------------------------------------

    def _server_metadata(self) -> Reply:
        return json_reply(
            {
                "name": self.server.options.server_name,
                "version": self.server.version,
                "extensions": list(EXTENSIONS),
            }
        )

    def _model_metadata(self, name: str, version: str) -> dict[str, Any]:
        meta = self.server.model_metadata(name, version)
        return {
            "name": meta.name,
            "versions": list(meta.versions),
            "platform": meta.platform,
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in meta.inputs
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in meta.outputs
            ],
        }

    def _statistics(self, name: str, version: str) -> Reply:
        stats = self.server.model_statistics(name, version)
        return json_reply({"model_stats": [_statistics_json(s) for s in stats]})

    # -- inference ----------------------------------------------------------------------------

    async def _infer(self, request: HttpRequest, name: str, version: str) -> Reply:
        headers = request.headers
        body = request.body
        encoding = headers.get("content-encoding")
        if encoding and encoding != "identity":
            try:  # in a worker thread: a compressed body may inflate to many megabytes
                body = await anyio.to_thread.run_sync(decompress, encoding, body, self.max_body)
            except KernelError as exc:
                reply = error_reply(exc)
                if exc.status is Status.UNSUPPORTED:
                    reply.headers.append((b"accept-encoding", b"gzip, deflate"))
                return reply
        view = memoryview(body)
        header_length: int | None = None
        raw = headers.get("inference-header-content-length")
        if raw is not None:
            header_length = _header_length(raw, len(view))
        server = self.server
        call = decode_request(server, name, version, view, header_length, self._plans)
        if self._forwarding is not None:
            self._forwarding.forward(headers.items(), call.request.parameters)
        if server.tracer.propagates:  # OpenTelemetry mode: continue the client's trace
            call.request.trace = server.tracer.continued(
                headers.get("traceparent"), headers.get("tracestate")
            )
        request.watch = call.request
        response = await server.infer_once(call.request, call.target)
        header, buffers = encode_response(call, response, server.shared_memory)
        if buffers:
            reply_headers = [_OCTETS, (b"inference-header-content-length", b"%d" % len(header))]
        else:
            reply_headers = [_JSON]
        accept = headers.get("accept-encoding")
        if accept:
            chosen = response_encoding(accept)
            if chosen != "identity":
                whole = b"".join([header, *buffers])
                reply_headers.append((b"content-encoding", chosen.encode()))
                packed = await anyio.to_thread.run_sync(compress, chosen, whole)
                return Reply(200, reply_headers, [packed])
        return Reply(200, reply_headers, [header, *buffers])

    async def _generate(
        self, request: HttpRequest, name: str, version: str, stream: bool
    ) -> Reply | StreamingReply:
        """Triton's generate extension (see :mod:`._generate`)."""
        encoding = request.headers.get("content-encoding")
        if encoding and encoding != "identity":
            raise KernelError(
                Status.INVALID_ARG, "Unsupported content-encoding, only 'identity' is supported."
            )
        server = self.server
        call, target = decode_generate(server, name, version, request.body)
        if self._forwarding is not None:
            self._forwarding.forward(request.headers.items(), call.parameters)
        request.watch = call
        if stream:
            return await generate_stream(server, call, target)
        return await generate(server, call, target)

    # -- model repository ---------------------------------------------------------------------

    async def _repository_route(self, request: HttpRequest, parts: list[str]) -> Reply:
        # /v2/repository[/{repository}]/index|models/{name}/load|unload
        rest = parts[3:]
        repository = ""
        if rest and rest[0] not in ("index", "models"):
            repository, rest = rest[0], rest[1:]
        if rest == ["index"]:
            action = "index"
        elif len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload") and rest[1]:
            action = rest[2]
        else:
            return _NOT_FOUND
        if request.method != "POST":
            return _NOT_ALLOWED_POST
        if repository and action != "index":  # Triton lists the index of any repository name
            raise KernelError(
                Status.UNSUPPORTED, "'repository_name' specification is not supported"
            )
        body = _json_body(request.body)
        if action == "index":
            ready = body.get("ready", False)
            if not isinstance(ready, bool):
                raise KernelError(
                    Status.INVALID_ARG, "attempt to access JSON non-boolean as boolean"
                )
            rows = []
            for entry in self.server.repository_index(ready_only=ready):
                row = {"name": entry.name}
                if entry.version:
                    row["version"] = entry.version
                if entry.state:
                    row["state"] = entry.state
                if entry.reason:
                    row["reason"] = entry.reason
                rows.append(row)
            return json_reply(rows)
        name = rest[1]
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise KernelError(Status.INVALID_ARG, "attempt to access JSON non-object as object")
        if action == "unload":
            dependents = params.get("unload_dependents", False)
            if not isinstance(dependents, bool):
                raise KernelError(
                    Status.INVALID_ARG,
                    "Unable to parse 'unload_dependents': attempt to access JSON non-boolean as"
                    " boolean",
                )
            await self.server.unload_model(name, unload_dependents=dependents)
            return _empty()
        config: str | None = None
        files: dict[str, bytes] = {}
        for key, value in params.items():
            if not isinstance(value, str):
                raise KernelError(Status.INVALID_ARG, "attempt to access JSON non-string as string")
            if key == "config":
                config = value
            elif key.startswith("file:"):
                try:
                    files[key[5:]] = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    raise KernelError(
                        Status.INVALID_ARG, f"failed to decode the base64 content of '{key}'"
                    ) from None
        await self.server.load_model(name, config, files or None)
        return _empty()

    # -- shared memory ------------------------------------------------------------------------

    def _shared_memory_route(self, request: HttpRequest, parts: list[str]) -> Reply:
        # /v2/{system|cuda}sharedmemory[/region/{name}]/status|register|unregister
        rest = parts[3:]
        region = ""
        if len(rest) == 3 and rest[0] == "region" and rest[1]:
            region, rest = rest[1], rest[2:]
        if len(rest) != 1 or rest[0] not in ("status", "register", "unregister"):
            return _NOT_FOUND
        action = rest[0]
        if action == "status" and request.method != "GET":
            return _NOT_ALLOWED
        if action != "status" and request.method != "POST":
            return _NOT_ALLOWED_POST
        if parts[2] == "cudasharedmemory":
            return self._cuda_shared_memory(action, region)
        shm = self.server.shared_memory
        if action == "status":
            return json_reply(
                [
                    {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                    for r in shm.status(region)
                ]
            )
        if action == "unregister":
            if region:
                shm.unregister(region)
            else:
                shm.unregister_all()
            return _empty()
        if not region:
            raise KernelError(
                Status.INVALID_ARG,
                "'region name' is necessary to register system shared memory region",
            )
        body = _json_body(request.body, optional=False)
        if "key" not in body:
            raise KernelError(
                Status.INVALID_ARG, "Shared memory register request has no 'key' field"
            )
        key = body["key"]
        if not isinstance(key, str):
            raise KernelError(Status.INVALID_ARG, "attempt to access JSON non-string as string")
        if "byte_size" not in body:
            raise KernelError(
                Status.INVALID_ARG, "Shared memory register request has no 'byte_size' field"
            )
        offset, byte_size = body.get("offset", 0), body["byte_size"]
        for value in (offset, byte_size):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise KernelError(
                    Status.INVALID_ARG,
                    "attempt to access JSON non-unsigned-integer as unsigned-integer",
                )
        shm.register(region, key, offset, byte_size)
        return _empty()

    @staticmethod
    def _cuda_shared_memory(action: str, region: str) -> Reply:
        # No GPU is ever usable here: nothing can be registered, so nothing is listed.
        if action == "status":
            if region:
                raise KernelError(
                    Status.NOT_FOUND, f"Unable to find cuda shared memory region: '{region}'"
                )
            return json_reply([])
        if action == "unregister":
            return _empty()
        if not region:
            raise KernelError(
                Status.INVALID_ARG,
                "'region name' is necessary to register cuda shared memory region",
            )
        raise KernelError(
            Status.INVALID_ARG,
            f"failed to register CUDA shared memory region: '{region}', GPUs not supported",
        )

    # -- trace and logging --------------------------------------------------------------------

    def _trace(self, request: HttpRequest, model: str) -> Reply:
        if request.method not in ("GET", "POST"):
            return _NOT_ALLOWED_GET_POST
        server = self.server
        if model and not server.is_model_ready(model):
            raise KernelError(Status.INVALID_ARG, f"Request for unknown model : {model}")
        store = server.trace_settings
        if request.method == "POST":
            settings = store.update(model, _trace_changes(_json_body(request.body)))
        else:
            settings = store.get(model)
        return json_reply(_trace_json(settings))

    def _logging(self, request: HttpRequest) -> Reply:
        if request.method not in ("GET", "POST"):
            return _NOT_ALLOWED_GET_POST
        settings = self.server.log_settings
        if request.method == "POST":
            return json_reply(settings.update(_json_body(request.body), _wrong_json_kind))
        return json_reply(settings.get())


def _wrong_json_kind(key: str, kind: str) -> KernelError:
    """A settings value of the wrong JSON type, in Triton's words."""
    return KernelError(Status.INVALID_ARG, f"attempt to access JSON non-{kind} as {kind}")


def _trace_changes(body: dict[str, Any]) -> dict[str, list[str] | None]:
    """Trace settings from Triton's JSON (``trace_level`` a list, the rest strings) to the
    store's form (lists of strings; ``None`` clears)."""
    changes: dict[str, list[str] | None] = {}
    for key, value in body.items():
        if value is None:
            changes[key] = None
        elif key == "trace_level":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _wrong_json_kind(key, "array")
            changes[key] = value
        elif not isinstance(value, str):
            raise _wrong_json_kind(key, "string")
        else:
            changes[key] = [value]
    return changes


def _trace_json(settings: dict[str, list[str]]) -> dict[str, Any]:
    """The store's settings as Triton's JSON has them: ``trace_level`` a list, the rest strings."""
    return {
        key: values if key == "trace_level" else (values[0] if values else "")
        for key, values in settings.items()
    }


def _header_length(raw: str, body_length: int) -> int:
    """The ``Inference-Header-Content-Length`` value, checked against the body's length."""
    text = raw.strip()
    try:
        value = int(text)
    except ValueError:
        raise KernelError(
            Status.INVALID_ARG, f"Unable to parse Inference-Header-Content-Length, got: {raw}"
        ) from None
    if value < 0 or value > body_length:
        raise KernelError(
            Status.INVALID_ARG,
            f"inference header size should be in range (0, {body_length}), got: {raw}",
        )
    return value
