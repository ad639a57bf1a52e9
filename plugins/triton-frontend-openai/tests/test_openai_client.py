"""The official ``openai`` client against the frontend: sync and async, streaming and not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

PROMPT = "the quick brown fox"


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def test_models_lists_the_text_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["openai_echo", "openai_once"]
    assert all(m.object == "model" and m.owned_by == "triton-kernel" for m in models.data)
    assert client.models.retrieve("openai_once").id == "openai_once"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("python_add_sub")


@pytest.mark.parametrize("model", ["openai_echo", "openai_once"])
def test_completion(client: openai.OpenAI, model: str) -> None:
    completion = client.completions.create(model=model, prompt=PROMPT, max_tokens=6)
    assert completion.object == "text_completion" and completion.model == model
    choice = completion.choices[0]
    assert choice.text == "the quick brown fox the quick"
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 6)
    assert completion.usage.total_tokens == 10


@pytest.mark.parametrize("model", ["openai_echo", "openai_once"])
def test_streamed_completion(client: openai.OpenAI, model: str) -> None:
    stream = client.completions.create(
        model=model,
        prompt=PROMPT,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == "the quick brown fox the"
    if model == "openai_echo":
        assert texts[:5] == ["the", " quick", " brown", " fox", " the"]  # a chunk per token
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_chat_completion(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model="openai_echo",
        messages=[{"role": "user", "content": "hello world"}],
        max_tokens=3,
    )
    # the default template renders "user: hello world\nassistant: "
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == "user: hello world"
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and chat.usage.prompt_tokens == 4


def test_streamed_chat_completion(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="openai_echo",
        messages=[{"role": "system", "content": "a b"}, {"role": "user", "content": "c"}],
        max_completion_tokens=4,
        stream=True,
    )
    chunks = list(stream)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == "system: a b user:"
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize("model", ["openai_echo", "openai_once"])
def test_stop_sequence(client: openai.OpenAI, model: str) -> None:
    completion = client.completions.create(model=model, prompt=PROMPT, stop=["brown"])
    assert completion.choices[0].text == "the quick "
    assert completion.choices[0].finish_reason == "stop"
    stream = client.completions.create(model=model, prompt=PROMPT, stop="fox", stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == "the quick brown "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_sampling_fields_reach_the_model(client: openai.OpenAI) -> None:
    prompt = "a b c d e f g h i j k l"
    texts = [
        client.completions.create(
            model="openai_echo", prompt=prompt, temperature=1.0, seed=7, max_tokens=12
        )
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert texts[0] == texts[1]  # the same seed, the same order
    assert sorted(texts[0].split()) == prompt.split()
    plain = client.completions.create(model="openai_echo", prompt=prompt, max_tokens=12)
    assert plain.choices[0].text == prompt  # temperature 0: in order


def test_echo(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model="openai_echo", prompt="x y", max_tokens=2, echo=True
    )
    assert completion.choices[0].text == "x yx y"


def test_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="nope", prompt="p")
    assert "`nope` does not exist" in missing.value.message
    with pytest.raises(openai.BadRequestError) as not_text:
        client.completions.create(model="python_add_sub", prompt="p")
    assert "does not serve text completions" in not_text.value.message
    with pytest.raises(openai.BadRequestError) as several:
        client.completions.create(model="openai_echo", prompt="p", n=2)
    assert "only one choice" in several.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="openai_echo", messages=[])


def test_model_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as before:
        client.completions.create(model="openai_echo", prompt=PROMPT, extra_body={"fail_after": 0})
    assert "failed on purpose after 0 tokens" in before.value.message
    stream = client.completions.create(
        model="openai_echo", prompt=PROMPT, stream=True, extra_body={"fail_after": 2}
    )
    texts = []
    with pytest.raises(openai.APIError) as during:
        texts.extend(chunk.choices[0].text for chunk in stream)
    assert texts == ["the", " quick"]
    assert "failed on purpose after 2 tokens" in during.value.message


async def test_async_client(base_url: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="unused", max_retries=0, timeout=60
    ) as client:
        completion = await client.completions.create(
            model="openai_echo", prompt=PROMPT, max_tokens=4
        )
        assert completion.choices[0].text == PROMPT

        async def stream(prompt: str) -> str:
            chunks = await client.chat.completions.create(
                model="openai_echo",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=3,
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in chunks])

        prompts = [f"p{i} q{i}" for i in range(4)]
        results = await asyncio.wait_for(asyncio.gather(*(stream(p) for p in prompts)), 60)
        assert results == [f"user: p{i} q{i}" for i in range(4)]
