"""A model's responses as OpenAI answers them: the completion object, or SSE chunks.

:class:`Generation` follows one choice's text as the responses arrive. It ends the generation at
a stop sequence (text past it is never sent: an end of the text that begins one is held back until
it cannot be one) and at ``max_tokens``, and counts usage: a model may report
``prompt_tokens`` / ``completion_tokens`` / ``finish_reason`` as response parameters (the last
value wins); otherwise each response that carries text counts as one completion token (a
token-streaming model sends one per token) and the prompt's whitespace-separated words as its
tokens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from kernel import ParameterValue

from ._requests import GenerationRequest

__all__ = ["DONE", "Generation", "Renderer", "sse_event"]

DONE = b"data: [DONE]\n\n"
_MARKER = "\x00"
"""Stands for the text while the frame around it is rendered (no name or id holds a NUL)."""


def sse_event(data: Mapping[str, Any]) -> bytes:
    """One Server-Sent Event holding ``data`` as JSON."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


class Generation:
    """One choice's text, finish reason and token counts, from the model's responses."""

    __slots__ = (
        "_held",
        "_hold",
        "_parts",
        "_reported_completion",
        "_responses",
        "_stop",
        "done",
        "finish_reason",
        "max_tokens",
        "prompt_tokens",
    )

    def __init__(self, request: GenerationRequest, prompt: str) -> None:
        self._stop = request.stop
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._held = ""
        self._responses = 0
        self._reported_completion: int | None = None
        self.max_tokens = request.max_tokens
        self.prompt_tokens = len(prompt.split())
        self._parts: list[str] = []
        self.done = False
        """The generation is over (stop sequence or ``max_tokens``): end the inference."""
        self.finish_reason: str | None = None

    @property
    def text(self) -> str:
        """What was released so far."""
        return "".join(self._parts)

    @property
    def completion_tokens(self) -> int:
        reported = self._reported_completion
        return self._responses if reported is None else reported

    def add(self, text: str, parameters: Mapping[str, ParameterValue]) -> str:
        """Take one response's new text and parameters; returns the text to send now."""
        if self.done:
            return ""
        self._read_parameters(parameters)
        if text:
            self._responses += 1
        pending = self._held + text
        released = pending
        self._held = ""
        if self._stop:
            cut = min((i for i in (pending.find(s) for s in self._stop) if i >= 0), default=-1)
            if cut >= 0:
                released = pending[:cut]
                self._end("stop")
            else:
                keep = self._partial_stop(pending)
                released, self._held = (
                    pending[: len(pending) - keep],
                    pending[len(pending) - keep :],
                )
        if (
            not self.done
            and self.max_tokens is not None
            and self.completion_tokens >= self.max_tokens
        ):
            released += self._held
            self._held = ""
            self._end("length")
        self._parts.append(released)
        return released

    def finish(self, parameters: Mapping[str, ParameterValue] | None = None) -> str:
        """The model ended the generation; returns the text still held back."""
        if parameters:
            self._read_parameters(parameters)
        released, self._held = self._held, ""
        self._parts.append(released)
        if not self.done:
            reported = self.finish_reason
            limit = self.max_tokens is not None and self.completion_tokens >= self.max_tokens
            self._end(reported or ("length" if limit else "stop"))
        return released

    def _partial_stop(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins a stop sequence."""
        for keep in range(min(self._hold, len(text)), 0, -1):
            tail = text[-keep:]
            if any(s.startswith(tail) for s in self._stop):
                return keep
        return 0

    def _end(self, reason: str) -> None:
        self.done = True
        self.finish_reason = reason

    def _read_parameters(self, parameters: Mapping[str, ParameterValue]) -> None:
        if not parameters:
            return
        prompt = parameters.get("prompt_tokens")
        if isinstance(prompt, int) and not isinstance(prompt, bool):
            self.prompt_tokens = prompt
        completion = parameters.get("completion_tokens")
        if isinstance(completion, int) and not isinstance(completion, bool):
            self._reported_completion = completion
        reason = parameters.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish_reason = reason

    def usage(self) -> dict[str, int]:
        prompt, completion = self.prompt_tokens, self.completion_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }


class Renderer:
    """The JSON objects of one request's answer, in OpenAI's shapes."""

    __slots__ = ("_base", "_chat", "_role_sent", "_text_frame")

    def __init__(self, request: GenerationRequest, model: str) -> None:
        self._chat = request.chat
        prefix = "chatcmpl-" if request.chat else "cmpl-"
        self._base: dict[str, Any] = {
            "id": prefix + uuid.uuid4().hex,
            "object": "",
            "created": int(time.time()),
            "model": model,
        }
        self._role_sent = False
        self._text_frame: tuple[bytes, bytes] | None = None

    @property
    def id(self) -> str:
        """The completion's id (``cmpl-...`` / ``chatcmpl-...``)."""
        return str(self._base["id"])

    def completion(self, generation: Generation) -> dict[str, Any]:
        """The whole answer of a request that did not stream."""
        choice: dict[str, Any] = {"index": 0}
        if self._chat:
            choice["message"] = {"role": "assistant", "content": generation.text}
        else:
            choice["text"] = generation.text
        choice["logprobs"] = None
        choice["finish_reason"] = generation.finish_reason
        return {
            **self._base,
            "object": "chat.completion" if self._chat else "text_completion",
            "choices": [choice],
            "usage": generation.usage(),
        }

    def chunk(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        """One streamed chunk: new text, and the finish reason on the last one."""
        choice: dict[str, Any] = {"index": 0}
        if self._chat:
            delta: dict[str, Any] = {}
            if not self._role_sent:
                delta["role"] = "assistant"
                self._role_sent = True
            if text or finish_reason is None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text
        choice["logprobs"] = None
        choice["finish_reason"] = finish_reason
        return {
            **self._base,
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "choices": [choice],
        }

    def text_event(self, text: str) -> bytes:
        """The SSE event of a chunk carrying ``text``: the hot path (one per token), so the
        bytes around the text are rendered once per request."""
        if self._chat and not self._role_sent:
            return sse_event(self.chunk(text))
        frame = self._text_frame
        if frame is None:
            marker = orjson.dumps(_MARKER)
            prefix, _, suffix = orjson.dumps(self.chunk(_MARKER)).partition(marker)
            frame = self._text_frame = (b"data: " + prefix, suffix + b"\n\n")
        return frame[0] + orjson.dumps(text) + frame[1]

    def usage_chunk(self, generation: Generation) -> dict[str, Any]:
        """The last chunk when ``stream_options.include_usage`` is set: no choices, usage."""
        return {
            **self._base,
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "choices": [],
            "usage": generation.usage(),
        }
