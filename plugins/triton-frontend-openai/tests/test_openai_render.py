"""A model's responses as OpenAI chunks and completions: stop sequences, max_tokens, usage."""

from __future__ import annotations

import json

from triton_frontend_openai._render import DONE, Generation, Renderer, sse_event
from triton_frontend_openai._requests import GenerationRequest


def _generation(**fields: object) -> Generation:
    request = GenerationRequest(chat=False, model="m", **fields)  # type: ignore[arg-type]
    return Generation(request, "one two three")


def test_text_flows_through_without_stop() -> None:
    generation = _generation()
    assert [generation.add(t, {}) for t in ("a", " b", "")] == ["a", " b", ""]
    assert generation.finish() == "" and generation.finish_reason == "stop"
    assert generation.usage() == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_stop_sequence_cuts_the_text_and_ends() -> None:
    generation = _generation(stop=("END",))
    released = [generation.add(t, {}) for t in ("ab", "cE", "N", "Dxyz")]
    assert "".join(released) == "abc" and generation.text == "abc"
    assert generation.done and generation.finish_reason == "stop"
    assert generation.add("more", {}) == ""


def test_held_back_text_is_released_when_it_cannot_start_a_stop() -> None:
    generation = _generation(stop=("END",))
    assert generation.add("abcE", {}) == "abc"  # "E" could begin "END"
    assert generation.add("x", {}) == "Ex"
    assert generation.finish() == "" and generation.text == "abcEx"


def test_stop_spanning_responses_and_the_earliest_wins() -> None:
    generation = _generation(stop=("zz", "b c"))
    out = generation.add("a b", {}) + generation.add(" czz", {})
    assert out == "a " and generation.finish_reason == "stop"


def test_max_tokens_ends_with_length() -> None:
    generation = _generation(max_tokens=2, stop=("ab!",))
    assert generation.add("a", {}) == ""  # held: could begin a stop
    assert generation.add("b", {}) == "ab"  # the limit releases what was held
    assert generation.done and generation.finish_reason == "length"


def test_model_reported_counts_and_reason_win() -> None:
    generation = _generation(max_tokens=100)
    generation.add("abc", {"completion_tokens": 40, "prompt_tokens": 9})
    generation.finish({"completion_tokens": 41, "finish_reason": "tool_calls"})
    assert generation.usage() == {"prompt_tokens": 9, "completion_tokens": 41, "total_tokens": 50}
    assert generation.finish_reason == "tool_calls"


def test_model_finishing_at_max_tokens_says_length() -> None:
    generation = _generation(max_tokens=3)
    generation.add("a", {"completion_tokens": 3})
    assert generation.done and generation.finish_reason == "length"


def test_completion_and_chunk_shapes() -> None:
    generation = _generation()
    generation.add("hi", {})
    generation.finish()
    text = Renderer(GenerationRequest(chat=False, model="m"), "m")
    body = text.completion(generation)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [
        {"index": 0, "text": "hi", "logprobs": None, "finish_reason": "stop"}
    ]
    assert body["usage"]["completion_tokens"] == 1
    chat = Renderer(GenerationRequest(chat=True, model="m"), "m")
    assert chat.completion(generation)["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hi",
    }
    first, last = chat.chunk("h"), chat.chunk("", "stop")
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "h"}
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "stop"
    assert first["id"] == last["id"]
    usage = chat.usage_chunk(generation)
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 4


def test_sse_framing() -> None:
    event = sse_event({"a": 1})
    assert event == b'data: {"a":1}\n\n'
    assert json.loads(event[6:]) == {"a": 1}
    assert DONE == b"data: [DONE]\n\n"


def test_text_event_is_the_chunk_as_an_event() -> None:
    for chat in (False, True):
        fast = Renderer(GenerationRequest(chat=chat, model='m"x'), 'm"x')
        slow = Renderer(GenerationRequest(chat=chat, model='m"x'), 'm"x')
        for text in ("first", 'a "quoted" \u00e9 \n line', "\x00"):
            event = fast.text_event(text)
            assert event.startswith(b"data: ") and event.endswith(b"\n\n")
            expected = slow.chunk(text)
            expected["id"] = fast.id
            assert json.loads(event[6:]) == expected
