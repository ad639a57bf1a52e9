"""OpenAI request bodies read and checked, without sockets: JSON bytes in, a GenerationRequest out.

The frontend answers what it reads here itself (``stream``, ``stream_options``, ``stop``,
``max_tokens``, ``echo``, ``n``) and hands every sampling field to the model as a request
parameter, under OpenAI's name: ``max_tokens``, ``temperature``, ``top_p``, ``seed``,
``presence_penalty``, ... and any field OpenAI does not define (``top_k``, ``min_p``, as vLLM's
server takes them). Scalars travel as they are; lists and objects (``stop``, ``logit_bias``)
as JSON text, since a request parameter is a bool, an int, a float or a string.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from kernel import ParameterValue

from ._errors import OpenAIError

__all__ = ["ChatMessage", "GenerationRequest", "parse_request"]

_MAX_STOP = 4
"""OpenAI takes up to four stop sequences."""
_ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
# Read by the frontend, never handed to the model.
_FRONTEND_FIELDS = frozenset(("model", "prompt", "messages", "stream", "stream_options"))
# (minimum, maximum) of the numeric fields OpenAI bounds.
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_INTEGERS = ("max_tokens", "max_completion_tokens", "n", "seed", "best_of")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(slots=True)
class GenerationRequest:
    """One ``/v1/completions`` or ``/v1/chat/completions`` request, checked."""

    chat: bool
    model: str
    prompt: str = ""
    """The completion's prompt (completions only; a chat's prompt is its messages, rendered
    by the model's chat template)."""
    messages: tuple[ChatMessage, ...] = ()
    stream: bool = False
    include_usage: bool = False
    """``stream_options.include_usage``: a last chunk carries the usage counts."""
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    echo: bool = False
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    """What the model receives as request parameters."""


def _invalid(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param)


def _wrong_type(name: str, expected: str, value: Any) -> OpenAIError:
    return _invalid(
        f"Invalid type for '{name}': expected {expected}, but got {_json_type(value)} instead.",
        name,
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _read_json(body: bytes | bytearray) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _invalid(
            "We could not parse the JSON body of your request. The API expects a JSON payload,"
            " but what was sent was not valid JSON."
        ) from None
    if not isinstance(data, dict):
        raise _invalid(f"Invalid request body: expected an object, but got {_json_type(data)}.")
    return data


def _text_content(content: Any, index: int) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    name = f"messages[{index}].content"
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else _json_type(part)
                raise _invalid(
                    f"Invalid content part in '{name}': only text is supported, got {kind!r}.", name
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise _wrong_type(f"{name}.text", "a string", text)
            texts.append(text)
        return "".join(texts)
    raise _wrong_type(name, "a string or an array of content parts", content)


def _messages(value: Any) -> tuple[ChatMessage, ...]:
    if value is None:
        raise _invalid("Missing required parameter: 'messages'.", "messages")
    if not isinstance(value, list):
        raise _wrong_type("messages", "an array", value)
    if not value:
        raise _invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got"
            " an empty array instead.",
            "messages",
        )
    messages = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _wrong_type(f"messages[{index}]", "an object", item)
        role = item.get("role")
        if role is None:
            raise _invalid(
                f"Missing required parameter: 'messages[{index}].role'.", f"messages[{index}].role"
            )
        if role not in _ROLES:
            raise _invalid(
                f"Invalid value: {role!r}. Supported values are: 'system', 'developer', 'user',"
                " 'assistant', 'tool' and 'function'.",
                f"messages[{index}].role",
            )
        messages.append(ChatMessage(role, _text_content(item.get("content"), index)))
    return tuple(messages)


def _prompt(value: Any) -> str:
    if value is None:
        raise _invalid("Missing required parameter: 'prompt'.", "prompt")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        raise _invalid("Invalid 'prompt': only one prompt per request is supported.", "prompt")
    raise _invalid(
        "Invalid 'prompt': expected a string (token arrays are not supported).", "prompt"
    )


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if len(value) > _MAX_STOP:
            raise _invalid(
                f"Invalid 'stop': array too long. Expected an array with maximum length"
                f" {_MAX_STOP}, but got an array with length {len(value)} instead.",
                "stop",
            )
        return tuple(s for s in value if s)
    raise _wrong_type("stop", "a string or an array of strings", value)


def _check_number(name: str, value: Any) -> None:
    if name in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(name, "an integer", value)
    elif name in _RANGES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(name, "a number", value)
        low, high = _RANGES[name]
        if not (math.isfinite(value) and low <= value <= high):
            which = "below minimum" if value < low else "above maximum"
            bound = low if value < low else high
            raise _invalid(
                f"Invalid '{name}': decimal {which} value. Expected a value"
                f" {'>=' if value < low else '<='} {bound:g}, but got {value} instead.",
                name,
            )


def _parameter(name: str, value: Any) -> ParameterValue:
    """A field as a request parameter: scalars as they are, the rest as JSON text."""
    if name.startswith("triton_"):
        raise _invalid(f"Unrecognized request argument supplied: {name}", name)
    if isinstance(value, bool | int | float | str):
        return value
    return orjson.dumps(value).decode()


def parse_request(body: bytes | bytearray, *, chat: bool) -> GenerationRequest:
    """Read a ``/v1/chat/completions`` (``chat``) or ``/v1/completions`` body.

    :raises OpenAIError: 400 with OpenAI's wording for a body it would refuse, or a feature
        this frontend does not serve (``n`` > 1, ``logprobs``, several prompts).
    """
    data = _read_json(body)
    model = data.get("model")
    if model is None:
        raise _invalid("you must provide a model parameter", "model")
    if not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    request = GenerationRequest(chat=chat, model=model)
    if chat:
        request.messages = _messages(data.get("messages"))
    else:
        request.prompt = _prompt(data.get("prompt"))
    stream = data.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise _wrong_type("stream", "a boolean", stream)
        request.stream = stream
    options = data.get("stream_options")
    if options is not None:
        if not request.stream:
            raise _invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        if not isinstance(options, dict):
            raise _wrong_type("stream_options", "an object", options)
        usage = options.get("include_usage", False)
        if not isinstance(usage, bool):
            raise _wrong_type("stream_options.include_usage", "a boolean", usage)
        request.include_usage = usage
    for name, value in data.items():
        if name in _FRONTEND_FIELDS or value is None:
            continue
        _check_number(name, value)
        if name == "stop":
            request.stop = _stop(value)
            request.parameters[name] = orjson.dumps(list(request.stop)).decode()
            continue
        if name in ("max_tokens", "max_completion_tokens"):
            if value < 1:
                raise _invalid(
                    f"Invalid '{name}': integer below minimum value. Expected a value >= 1,"
                    f" but got {value} instead.",
                    name,
                )
            request.max_tokens = value
            name = "max_tokens"  # the model sees one name for both
        elif name == "n" and value != 1:
            raise _invalid("Invalid 'n': only one choice per request is supported.", "n")
        elif name in ("logprobs", "top_logprobs") and value not in (False, 0):
            raise _invalid(f"Invalid '{name}': log probabilities are not supported.", name)
        elif name == "echo":
            if chat or not isinstance(value, bool):
                raise (
                    _wrong_type(name, "a boolean", value)
                    if not chat
                    else _invalid("Unrecognized request argument supplied: echo", name)
                )
            request.echo = value
            continue
        request.parameters[name] = _parameter(name, value)
    return request
