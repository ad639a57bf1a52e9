"""Model-config parameters map OpenAI requests to a model's tensors."""

from __future__ import annotations

import numpy as np
import pytest
from triton_frontend_openai._errors import OpenAIError
from triton_frontend_openai._mapping import TextDecoder, TextModel
from triton_frontend_openai._requests import ChatMessage

from kernel.config import DataType, ModelConfig, ModelInput, ModelOutput, ModelParameter


def _config(
    inputs: dict[str, tuple[DataType, list[int]]],
    outputs: tuple[str, ...] = ("text_output",),
    parameters: dict[str, str] | None = None,
    max_batch_size: int = 0,
) -> ModelConfig:
    return ModelConfig(
        name="llm",
        max_batch_size=max_batch_size,
        input=[ModelInput(name=n, data_type=t, dims=d) for n, (t, d) in inputs.items()],
        output=[ModelOutput(name=n, data_type=DataType.TYPE_STRING, dims=[-1]) for n in outputs],
        parameters={k: ModelParameter(string_value=v) for k, v in (parameters or {}).items()},
    )


def test_defaults_follow_tritons_llm_models() -> None:
    config = _config(
        {
            "text_input": (DataType.TYPE_STRING, [1]),
            "stream": (DataType.TYPE_BOOL, [1]),
            "sampling_parameters": (DataType.TYPE_STRING, [1]),
        }
    )
    model = TextModel.from_config(config)
    tensors = model.inputs("hi", True, {"temperature": 0.5})
    assert tensors["text_input"].tolist() == [b"hi"]
    assert tensors["stream"].tolist() == [True]
    assert tensors["sampling_parameters"].tolist() == [b'{"temperature":0.5}']


def test_configured_names_batched_shapes_and_template() -> None:
    config = _config(
        {"PROMPT": (DataType.TYPE_STRING, [-1]), "stream": (DataType.TYPE_INT32, [1])},
        outputs=("TEXT",),
        parameters={
            "openai_prompt_input": "PROMPT",
            "openai_text_output": "TEXT",
            "openai_chat_template": "<|{role}|>{content}",
            "openai_chat_generation_prompt": "<|assistant|>",
        },
        max_batch_size=8,
    )
    model = TextModel.from_config(config)
    assert model.stream_input is None  # an INT32 "stream" is not the stream flag
    assert model.inputs("x", False, {})["PROMPT"].shape == (1, 1)
    prompt = model.chat_prompt([ChatMessage("system", "s"), ChatMessage("user", "u")])
    assert prompt == "<|system|>s<|user|>u<|assistant|>"


@pytest.mark.parametrize(
    ("inputs", "outputs", "parameters", "wording"),
    [
        ({"x": (DataType.TYPE_STRING, [1])}, ("text_output",), {}, "no input 'text_input'"),
        ({"text_input": (DataType.TYPE_FP32, [1])}, ("text_output",), {}, "is not TYPE_STRING"),
        ({"text_input": (DataType.TYPE_STRING, [2])}, ("text_output",), {}, "one element"),
        ({"text_input": (DataType.TYPE_STRING, [1])}, ("y",), {}, "no output 'text_output'"),
        (
            {"text_input": (DataType.TYPE_STRING, [1])},
            ("text_output",),
            {"openai_stream_input": "go"},
            "no input 'go'",
        ),
        (
            {"text_input": (DataType.TYPE_STRING, [1])},
            ("text_output",),
            {"openai_chat_template": "{user}"},
            "{role} and {content}",
        ),
        (
            {"text_input": (DataType.TYPE_STRING, [1])},
            ("text_output",),
            {"openai_text_output_mode": "all"},
            "delta or cumulative",
        ),
    ],
)
def test_models_that_cannot_serve_text(
    inputs: dict[str, tuple[DataType, list[int]]],
    outputs: tuple[str, ...],
    parameters: dict[str, str],
    wording: str,
) -> None:
    with pytest.raises(OpenAIError) as info:
        TextModel.from_config(_config(inputs, outputs, parameters))
    assert info.value.status == 400 and wording in info.value.message


def _text(*items: bytes) -> dict[str, np.ndarray]:
    array = np.empty(len(items), dtype=np.object_)
    array[:] = list(items)
    return {"text_output": array}


def test_decoder_joins_split_utf8_and_cumulative_text() -> None:
    config = _config({"text_input": (DataType.TYPE_STRING, [1])})
    decoder = TextDecoder(TextModel.from_config(config))
    euro = "€".encode()
    assert decoder.decode(_text(b"a" + euro[:1])) == "a"
    assert decoder.decode(_text(euro[1:])) == "€"
    assert decoder.decode({}) == ""
    assert decoder.decode(_text(b"\xe2"), final=True) == "\ufffd"
    config.parameters["openai_text_output_mode"] = ModelParameter(string_value="cumulative")
    cumulative = TextDecoder(TextModel.from_config(config))
    assert [cumulative.decode(_text(t)) for t in (b"a", b"ab", b"abc")] == ["a", "b", "c"]


ZEPHYR = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def test_jinja_chat_template() -> None:
    config = _config(
        {"text_input": (DataType.TYPE_STRING, [1])},
        parameters={"openai_chat_template_jinja": ZEPHYR, "openai_eos_token": "</s>"},
    )
    model = TextModel.from_config(config)
    prompt = model.chat_prompt([ChatMessage("system", "s"), ChatMessage("user", "u")])
    assert prompt == "<|system|>\ns</s>\n<|user|>\nu</s>\n<|assistant|>\n"


def test_jinja_template_errors() -> None:
    refusing = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
    )
    config = _config(
        {"text_input": (DataType.TYPE_STRING, [1])},
        parameters={"openai_chat_template_jinja": refusing},
    )
    model = TextModel.from_config(config)
    assert model.chat_prompt([ChatMessage("user", "u")]) == ""
    with pytest.raises(OpenAIError) as refused:
        model.chat_prompt([ChatMessage("system", "s")])
    assert (
        refused.value.status == 400 and "refused the messages: user first" in refused.value.message
    )
    sandboxed = "{{ messages.__class__.__mro__ }}"
    config.parameters["openai_chat_template_jinja"] = ModelParameter(string_value=sandboxed)
    with pytest.raises(OpenAIError):
        TextModel.from_config(config).chat_prompt([ChatMessage("user", "u")])
    config.parameters["openai_chat_template_jinja"] = ModelParameter(string_value="{% for %}")
    with pytest.raises(OpenAIError) as broken:
        TextModel.from_config(config)
    assert "does not compile" in broken.value.message
