"""OpenAI request bodies read without sockets: what the model receives, what is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from triton_frontend_openai._errors import OpenAIError
from triton_frontend_openai._requests import ChatMessage, parse_request


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _refusal(body: bytes, *, chat: bool = False) -> OpenAIError:
    with pytest.raises(OpenAIError) as info:
        parse_request(body, chat=chat)
    assert info.value.status == 400
    return info.value


def test_completion_fields_become_model_parameters() -> None:
    request = parse_request(
        _body(
            model="m",
            prompt="hello there",
            max_tokens=7,
            temperature=0.5,
            top_p=0.9,
            seed=3,
            stop=["\n", "END"],
            top_k=40,
            logit_bias={"50256": -100},
            user="u1",
        ),
        chat=False,
    )
    assert request.model == "m" and request.prompt == "hello there" and not request.chat
    assert request.max_tokens == 7 and request.stop == ("\n", "END")
    assert request.parameters == {
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 3,
        "stop": '["\\n","END"]',
        "top_k": 40,
        "logit_bias": '{"50256":-100}',
        "user": "u1",
    }


def test_frontend_fields_are_not_model_parameters() -> None:
    request = parse_request(
        _body(model="m", prompt=["p"], stream=True, stream_options={"include_usage": True}),
        chat=False,
    )
    assert request.stream and request.include_usage and request.prompt == "p"
    assert request.parameters == {}


def test_chat_messages_and_max_completion_tokens() -> None:
    request = parse_request(
        _body(
            model="m",
            messages=[
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
            max_completion_tokens=5,
            stop="x",
        ),
        chat=True,
    )
    assert request.messages == (ChatMessage("system", "be brief"), ChatMessage("user", "ab"))
    assert request.max_tokens == 5 and request.parameters["max_tokens"] == 5
    assert request.stop == ("x",) and request.parameters["stop"] == '["x"]'


def test_nulls_are_absent() -> None:
    request = parse_request(_body(model="m", prompt="p", temperature=None, stop=None), chat=False)
    assert request.parameters == {} and request.stop == ()


@pytest.mark.parametrize(
    ("body", "chat", "wording"),
    [
        (b"{not json", False, "could not parse the JSON body"),
        (b"[1]", False, "expected an object"),
        (_body(prompt="p"), False, "you must provide a model parameter"),
        (_body(model=3, prompt="p"), False, "Invalid type for 'model'"),
        (_body(model="m"), False, "Missing required parameter: 'prompt'"),
        (_body(model="m", prompt=["a", "b"]), False, "only one prompt"),
        (_body(model="m", prompt=[1, 2]), False, "token arrays are not supported"),
        (_body(model="m"), True, "Missing required parameter: 'messages'"),
        (_body(model="m", messages=[]), True, "empty array"),
        (_body(model="m", messages=[{"role": "boss", "content": "x"}]), True, "'boss'"),
        (_body(model="m", messages=[{"content": "x"}]), True, "messages[0].role"),
        (
            _body(model="m", messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
            True,
            "only text is supported",
        ),
        (_body(model="m", prompt="p", max_tokens=0), False, "Expected a value >= 1"),
        (_body(model="m", prompt="p", max_tokens="9"), False, "expected an integer"),
        (_body(model="m", prompt="p", temperature=3), False, "Expected a value <= 2"),
        (_body(model="m", prompt="p", top_p=-0.1), False, "Expected a value >= 0"),
        (_body(model="m", prompt="p", stop=["a", "b", "c", "d", "e"]), False, "maximum length 4"),
        (_body(model="m", prompt="p", stop=[1]), False, "Invalid type for 'stop'"),
        (_body(model="m", prompt="p", n=2), False, "only one choice"),
        (_body(model="m", prompt="p", logprobs=2), False, "not supported"),
        (_body(model="m", prompt="p", stream_options={}), False, "only allowed when 'stream'"),
        (_body(model="m", prompt="p", stream="yes"), False, "expected a boolean"),
        (_body(model="m", prompt="p", triton_x=1), False, "Unrecognized request argument"),
        (_body(model="m", messages=[{"role": "user", "content": "x"}], echo=True), True, "echo"),
    ],
)
def test_refusals(body: bytes, chat: bool, wording: str) -> None:
    error = _refusal(body, chat=chat)
    assert wording in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_echo_is_read_by_the_frontend() -> None:
    request = parse_request(_body(model="m", prompt="p", echo=True), chat=False)
    assert request.echo and "echo" not in request.parameters
