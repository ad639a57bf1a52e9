"""How an OpenAI request becomes a model's input tensors, set by the model's config parameters.

A text model (Triton's vLLM and TensorRT-LLM models, or any Python-backend model written the same
way) takes the prompt as a ``TYPE_STRING`` input and answers text in a ``TYPE_STRING`` output,
one response per token or chunk when decoupled, one response in all otherwise. The names are
read from the model's ``config.pbtxt`` ``parameters`` (all optional):

=============================== ===========================================================
``openai_prompt_input``         the prompt's input (default ``text_input``)
``openai_text_output``          the text's output (default ``text_output``)
``openai_text_output_mode``     ``delta`` (each response holds new text; default) or
                                ``cumulative`` (each holds all the text so far)
``openai_stream_input``         a ``TYPE_BOOL`` input set to the request's ``stream``
                                (default ``stream`` when the model has such an input)
``openai_parameters_input``     a ``TYPE_STRING`` input given the sampling parameters as JSON
                                (default ``sampling_parameters`` when the model has it, as
                                Triton's vLLM backend does); they are request parameters too
``openai_chat_template``        each chat message, formatted with ``{role}`` and
                                ``{content}`` (default ``{role}: {content}\\n``)
``openai_chat_generation_prompt`` appended after the messages (default ``assistant: ``)
``openai_chat_template_jinja``  instead of the two above: a Hugging Face ``chat_template``
                                (Jinja, sandboxed) given ``messages``,
                                ``add_generation_prompt=True``, ``bos_token``, ``eos_token``
``openai_bos_token``,           the ``bos_token`` / ``eos_token`` the Jinja template sees
``openai_eos_token``            (default empty)
=============================== ===========================================================
"""

from __future__ import annotations

import codecs
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
import orjson

from kernel import ModelConfig, ParameterValue

from ._errors import OpenAIError
from ._requests import ChatMessage

__all__ = ["TextDecoder", "TextModel"]

_DEFAULT_TEMPLATE = "{role}: {content}\n"
_DEFAULT_GENERATION_PROMPT = "assistant: "


def _parameter(config: ModelConfig, key: str) -> str | None:
    value = config.parameters.get(key)
    return None if value is None else value.string_value


@dataclass(frozen=True, slots=True)
class TextModel:
    """One model version's mapping (read once per loaded version)."""

    name: str
    prompt_input: str
    prompt_shape: tuple[int, ...]
    text_output: str
    cumulative: bool = False
    stream_input: str | None = None
    stream_shape: tuple[int, ...] = ()
    parameters_input: str | None = None
    parameters_shape: tuple[int, ...] = ()
    chat_template: str = _DEFAULT_TEMPLATE
    generation_prompt: str = _DEFAULT_GENERATION_PROMPT
    jinja: Callable[[Sequence[ChatMessage]], str] | None = None
    """The compiled ``openai_chat_template_jinja``, when set."""

    @classmethod
    def from_config(cls, config: ModelConfig) -> TextModel:
        """The mapping ``config`` sets.

        :raises OpenAIError: 400 naming what is missing, for a model that cannot serve text
            requests (no such input or output, wrong types, a template that does not format).
        """
        name = config.name
        inputs = {t.name: t for t in config.input}
        outputs = {t.name for t in config.output}
        batched = config.max_batch_size > 0

        def tensor(
            key: str, default: str, kind: str, required: bool
        ) -> tuple[str | None, tuple[int, ...]]:
            wanted = _parameter(config, key)
            input_name = default if wanted is None else wanted
            spec = inputs.get(input_name) if input_name else None
            if spec is None:
                if required or wanted:
                    raise _not_text(name, f"it has no input '{input_name}' ({key})")
                return None, ()
            if spec.data_type.name != kind:
                if not required and wanted is None:
                    return None, ()  # a same-named input of another kind is not ours
                raise _not_text(name, f"its input '{input_name}' is not {kind}")
            shape = tuple(1 if d < 0 else d for d in spec.dims)
            if int(np.prod(shape, dtype=np.int64)) != 1:
                raise _not_text(name, f"its input '{input_name}' does not take one element")
            return input_name, ((1,) if batched else ()) + shape

        prompt_input, prompt_shape = tensor(
            "openai_prompt_input", "text_input", "TYPE_STRING", True
        )
        assert prompt_input is not None
        stream_input, stream_shape = tensor("openai_stream_input", "stream", "TYPE_BOOL", False)
        parameters_input, parameters_shape = tensor(
            "openai_parameters_input", "sampling_parameters", "TYPE_STRING", False
        )
        text_output = _parameter(config, "openai_text_output") or "text_output"
        if text_output not in outputs:
            raise _not_text(name, f"it has no output '{text_output}' (openai_text_output)")
        mode = _parameter(config, "openai_text_output_mode") or "delta"
        if mode not in ("delta", "cumulative"):
            raise _not_text(name, f"openai_text_output_mode is {mode!r}, not delta or cumulative")
        template = _parameter(config, "openai_chat_template") or _DEFAULT_TEMPLATE
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        if not fields <= {"role", "content"}:
            raise _not_text(name, "openai_chat_template may only use {role} and {content}")
        generation_prompt = _parameter(config, "openai_chat_generation_prompt")
        jinja_template = _parameter(config, "openai_chat_template_jinja")
        jinja = None
        if jinja_template:
            jinja = _compile_jinja(
                name,
                jinja_template,
                bos_token=_parameter(config, "openai_bos_token") or "",
                eos_token=_parameter(config, "openai_eos_token") or "",
            )
        return cls(
            name=name,
            prompt_input=prompt_input,
            prompt_shape=prompt_shape,
            text_output=text_output,
            cumulative=mode == "cumulative",
            stream_input=stream_input,
            stream_shape=stream_shape,
            parameters_input=parameters_input,
            parameters_shape=parameters_shape,
            chat_template=template,
            generation_prompt=(
                _DEFAULT_GENERATION_PROMPT if generation_prompt is None else generation_prompt
            ),
            jinja=jinja,
        )

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt a chat renders to: each message by the template, then the generation
        prompt (or the Jinja template's rendering).

        :raises OpenAIError: 400 when the Jinja template refuses the messages
            (``raise_exception``) or fails on them.
        """
        if self.jinja is not None:
            return self.jinja(messages)
        parts = [self.chat_template.format(role=m.role, content=m.content) for m in messages]
        parts.append(self.generation_prompt)
        return "".join(parts)

    def inputs(
        self, prompt: str, stream: bool, parameters: Mapping[str, ParameterValue]
    ) -> dict[str, npt.NDArray[Any]]:
        """The request's input tensors."""
        tensors = {self.prompt_input: _one(prompt.encode(), self.prompt_shape)}
        if self.stream_input is not None:
            tensors[self.stream_input] = np.full(self.stream_shape, stream, dtype=np.bool_)
        if self.parameters_input is not None:
            tensors[self.parameters_input] = _one(orjson.dumps(parameters), self.parameters_shape)
        return tensors


def _compile_jinja(
    model: str, source: str, *, bos_token: str, eos_token: str
) -> Callable[[Sequence[ChatMessage]], str]:
    """A Hugging Face chat template, compiled once in Jinja's sandbox (the environment
    ``transformers`` renders chat templates in: trimmed blocks, loop controls,
    ``raise_exception``)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> NoReturn:
        raise jinja2.TemplateError(message)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.globals["raise_exception"] = raise_exception
    try:
        template = environment.from_string(source)
    except jinja2.TemplateError as exc:
        raise _not_text(model, f"openai_chat_template_jinja does not compile: {exc}") from None

    def render(messages: Sequence[ChatMessage]) -> str:
        try:
            return template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                bos_token=bos_token,
                eos_token=eos_token,
            )
        except jinja2.TemplateError as exc:
            raise OpenAIError(
                400,
                f"The model `{model}`'s chat template refused the messages: {exc}",
                param="messages",
            ) from None

    return render


def _one(value: bytes, shape: tuple[int, ...]) -> npt.NDArray[np.object_]:
    array = np.empty(shape, dtype=np.object_)
    array.reshape(-1)[0] = value
    return array


def _not_text(model: str, why: str) -> OpenAIError:
    return OpenAIError(
        400,
        f"The model `{model}` does not serve text completions: {why}. Its config.pbtxt"
        " parameters map OpenAI requests to its tensors (see docs/openai.md).",
        param="model",
    )


class TextDecoder:
    """The text of each response of one request, as it arrives.

    A token can end inside a UTF-8 character; the decoder keeps the partial bytes until the
    next response completes them. A cumulative model's responses are turned into deltas.
    """

    __slots__ = ("_cumulative", "_decoder", "_output", "_seen")

    def __init__(self, model: TextModel) -> None:
        self._output = model.text_output
        self._cumulative = model.cumulative
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._seen = 0

    def decode(self, outputs: Mapping[str, npt.NDArray[Any]], *, final: bool = False) -> str:
        """The new text ``outputs`` bring (``final``: flush a dangling partial character)."""
        array = outputs.get(self._output)
        data = b""
        if array is None or not array.size:
            pass
        elif array.size == 1:  # a token per response: the common case, kept cheap
            item = array.item()
            data = item if isinstance(item, bytes) else str(item).encode()
        else:
            data = b"".join(
                item if isinstance(item, bytes) else str(item).encode() for item in array.flat
            )
        if self._cumulative:
            data, self._seen = data[self._seen :], max(self._seen, len(data))
        return self._decoder.decode(data, final)
