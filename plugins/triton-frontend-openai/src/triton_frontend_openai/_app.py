"""The OpenAI routes: an HTTP request in, a JSON reply or an SSE stream out.

Served by the kernel's HTTP/1.1 transport (:class:`kernel.frontends.HttpListener`), so the body
limit, header and idle timeouts and the graceful stop are the kernel's. A request becomes one
inference on the server's protocol-neutral API (``prepare`` routes it, ``infer`` runs it); the
inference is the transport's ``watch``, so a client that disconnects cancels it, and a stream's
responses are pulled one at a time as the transport writes them, so a slow reader holds the
model back instead of filling a buffer.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from kernel import InferenceRequest, InferenceResponse, InferenceServer, KernelError, ModelConfig
from kernel.frontends import HttpRequest, Reply, StreamingReply

from ._errors import OpenAIError, from_kernel_error
from ._mapping import TextDecoder, TextModel
from ._render import DONE, Generation, Renderer, sse_event
from ._requests import GenerationRequest, parse_request

__all__ = ["OpenAIApp"]

log = logging.getLogger("triton_frontend_openai")

_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # a proxy in front (nginx) must not hold the events back
]
_OWNER = "triton-kernel"
_UNREAD_RESPONSES = 16
"""Responses a stream lets wait unread before the model's sending thread waits (as the kernel's
generate_stream)."""


def _json_reply(status: int, body: Any) -> Reply:
    return Reply(status, list(_JSON), [orjson.dumps(body)])


def _error_reply(error: OpenAIError) -> Reply:
    return _json_reply(error.status, error.body())


class OpenAIApp:
    """``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` over one server."""

    def __init__(
        self, server: InferenceServer, *, max_body: int, api_key: str | None = None
    ) -> None:
        self._server = server
        self.max_body = max_body
        self._api_key = api_key.encode() if api_key else None
        self._created = int(time.time())
        self._mappings: dict[str, tuple[ModelConfig, TextModel]] = {}

    async def handle(self, request: HttpRequest) -> Reply | StreamingReply:
        """The reply to ``request``; never raises (failures are OpenAI error replies)."""
        try:
            return await self._route(request)
        except OpenAIError as error:
            return _error_reply(error)
        except KernelError as error:
            return _error_reply(from_kernel_error(error))
        except Exception:
            log.exception("the OpenAI frontend failed on %s %s", request.method, request.path)
            return _error_reply(
                OpenAIError(
                    500, "The server had an error processing your request.", kind="server_error"
                )
            )

    async def _route(self, request: HttpRequest) -> Reply | StreamingReply:
        path = request.path.rstrip("/")
        method = request.method
        if path == "/health/ready" and method == "GET":
            ready = self._server.is_ready()
            return Reply(200 if ready else 503, [], [])
        if not path.startswith("/v1/"):
            raise _unknown_route(method, request.path)
        self._authorize(request)
        if path in ("/v1/completions", "/v1/chat/completions"):
            if method != "POST":
                raise _wrong_method(method, request.path)
            return await self._generate(request, chat=path == "/v1/chat/completions")
        if path == "/v1/models":
            if method != "GET":
                raise _wrong_method(method, request.path)
            return _json_reply(200, {"object": "list", "data": self._models()})
        if path.startswith("/v1/models/") and path.count("/") == 3:
            if method != "GET":
                raise _wrong_method(method, request.path)
            name = path.rsplit("/", 1)[1]
            for model in self._models():
                if model["id"] == name:
                    return _json_reply(200, model)
            raise OpenAIError(
                404, f"The model `{name}` does not exist", param="model", code="model_not_found"
            )
        raise _unknown_route(method, request.path)

    def _authorize(self, request: HttpRequest) -> None:
        if self._api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self._api_key
        ):
            raise OpenAIError(
                401,
                "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )

    # -- models -----------------------------------------------------------------------------

    def _mapping(self, name: str, config: ModelConfig) -> TextModel:
        """The model's OpenAI mapping, read once per loaded config."""
        cached = self._mappings.get(name)
        if cached is not None and cached[0] is config:
            return cached[1]
        mapping = TextModel.from_config(config)
        self._mappings[name] = (config, mapping)
        return mapping

    def _models(self) -> list[dict[str, Any]]:
        """The ready models this frontend can serve (those with a text mapping)."""
        listed: list[dict[str, Any]] = []
        names = sorted({e.name for e in self._server.repository_index(ready_only=True)})
        for name in names:
            try:
                self._mapping(name, self._server.prepare(name).config)
            except (KernelError, OpenAIError):
                continue  # unloaded meanwhile, or not a text model
            listed.append(
                {"id": name, "object": "model", "created": self._created, "owned_by": _OWNER}
            )
        return listed

    # -- completions --------------------------------------------------------------------------

    async def _generate(self, http: HttpRequest, *, chat: bool) -> Reply | StreamingReply:
        request = parse_request(http.body, chat=chat)
        try:
            target = self._server.prepare(request.model)
        except KernelError as error:
            raise from_kernel_error(error, request.model) from None
        mapping = self._mapping(target.name, target.config)
        prompt = mapping.chat_prompt(request.messages) if chat else request.prompt
        answer = _Answer(request, prompt, mapping, target.name)
        inference = InferenceRequest(
            target.name,
            mapping.inputs(prompt, request.stream, request.parameters),
            id=answer.renderer.id,  # the completion's id names it in traces and logs
            parameters=request.parameters,
        )
        if request.stream:
            # A slow reader holds the model's sending thread back instead of growing memory.
            inference.limit_unread_responses(_UNREAD_RESPONSES)
        http.watch = inference
        responses = self._server.infer(inference, target)
        try:
            first = await anext(responses)  # refusals (bad inputs, queue full) raise here
            if first.error is not None:
                raise from_kernel_error(first.error)
        except BaseException:
            await _close(responses)
            raise
        if request.stream:
            return StreamingReply(200, list(_SSE), answer.events(first, responses))
        body = await answer.collect(first, responses)
        return _json_reply(200, body)


class _Answer:
    """One request's answer, from its first response on."""

    __slots__ = ("decoder", "generation", "prompt", "renderer", "request")

    def __init__(
        self, request: GenerationRequest, prompt: str, mapping: TextModel, model: str
    ) -> None:
        self.request = request
        self.prompt = prompt
        self.decoder = TextDecoder(mapping)
        self.generation = Generation(request, prompt)
        self.renderer = Renderer(request, model)

    def _text(self, response: InferenceResponse) -> str:
        """Take one response; returns the text to send (all of it once the generation ends)."""
        generation = self.generation
        text = generation.add(
            self.decoder.decode(response.outputs, final=response.final), response.parameters
        )
        if response.final or generation.done:
            text += generation.finish()
        return text

    async def collect(
        self, first: InferenceResponse, responses: AsyncIterator[InferenceResponse]
    ) -> dict[str, Any]:
        """The whole answer; ends the inference early at a stop sequence or ``max_tokens``."""
        try:
            response: InferenceResponse | None = first
            while response is not None:
                if response.error is not None:
                    raise from_kernel_error(response.error)
                self._text(response)
                if response.final or self.generation.done:
                    break
                response = await anext(responses, None)
        finally:
            await _close(responses)
        if not self.generation.done:
            self.generation.finish()
        body = self.renderer.completion(self.generation)
        if self.request.echo:
            body["choices"][0]["text"] = self.prompt + body["choices"][0]["text"]
        return body

    async def events(
        self, first: InferenceResponse, responses: AsyncIterator[InferenceResponse]
    ) -> AsyncIterator[bytes]:
        """The SSE stream: a chunk per response that brings text, the finish reason, usage
        (``stream_options.include_usage``), ``[DONE]``. An error after the first response
        is an error event (OpenAI's clients raise it)."""
        renderer, generation = self.renderer, self.generation
        try:
            if self.request.echo:
                yield sse_event(renderer.chunk(self.prompt))
            response: InferenceResponse | None = first
            while response is not None:
                if response.error is not None:
                    yield sse_event(from_kernel_error(response.error).body())
                    yield DONE
                    return
                text = self._text(response)
                if text:
                    yield renderer.text_event(text)
                if response.final or generation.done:
                    break
                response = await anext(responses, None)
        finally:
            await _close(responses)  # at a stop sequence or max_tokens: cancels the request
        if not generation.done:
            generation.finish()
        yield sse_event(renderer.chunk("", generation.finish_reason))
        if self.request.include_usage:
            yield sse_event(renderer.usage_chunk(generation))
        yield DONE


async def _close(responses: AsyncIterator[InferenceResponse]) -> None:
    """End an inference's response stream: if the model is still answering, the server
    cancels the request (the model sees ``is_cancelled()``)."""
    aclose = getattr(responses, "aclose", None)
    if aclose is not None:
        await aclose()


def _unknown_route(method: str, path: str) -> OpenAIError:
    return OpenAIError(404, f"Invalid URL ({method} {path})", code="unknown_url")


def _wrong_method(method: str, path: str) -> OpenAIError:
    return OpenAIError(405, f"Method not allowed ({method} {path})", code="method_not_allowed")
