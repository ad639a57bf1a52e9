"""Model configuration text, JSON and binary forms: the one place they are handled.

``config.pbtxt`` is protobuf text format, which no betterproto flavour parses.
Each conversion here goes through the descriptor-based message class that
google.protobuf builds from ``ModelConfig.DESCRIPTOR`` (the generated code
carries descriptors), and crosses to the betterproto2 ``ModelConfig`` through
the binary wire format, which is lossless both ways. These run at model load
time only, so the extra copy does not matter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, message_factory, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from kernel._proto.inference import ModelConfig

__all__ = [
    "ConfigParseError",
    "config_from_json",
    "config_to_json",
    "config_to_text",
    "parse_model_config",
]

_PB_MODEL_CONFIG: type[Message] = message_factory.GetMessageClass(ModelConfig.DESCRIPTOR)

# text_format.ParseError renders as "LINE:COL : 'LINE TEXT': MESSAGE" (the quoted
# line text only for some errors); keep MESSAGE alone.
_LOCATION_PREFIX = re.compile(r"^\d+:\d+ : ")
# Messages that name the offending field, as protobuf words them, most specific
# first; for nested "Failed to parse a field: Failed to parse b field: ..." the
# innermost (last) name wins.
_FIELD_IN_MESSAGE = (
    re.compile(r'has no field named "([^"]+)"'),
    re.compile(r'should not have multiple "([^"]+)" (?:oneof )?fields'),
    re.compile(r'^Field "([^"]+)" is specified along with'),
    re.compile(r"[Ff]ailed to parse ([A-Za-z_]\w*) field"),
)
_QUOTED = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'""")
_FIELD_BEFORE_VALUE = re.compile(r"([A-Za-z_]\w*)\s*:")


class ConfigParseError(ValueError):
    """A model configuration that does not parse.

    ``line`` and ``column`` are 1-based and None when unknown (JSON input);
    ``field`` is the name of the offending field when it can be told, else None.
    """

    def __init__(
        self,
        source: str,
        line: int | None,
        column: int | None,
        message: str,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.message = message
        self.field = field
        if line is None:
            where = source
        elif column is None:
            where = f"{source}:{line}"
        else:
            where = f"{source}:{line}:{column}"
        named = f" (field '{field}')" if field and field not in message else ""
        super().__init__(f"{where}: {message}{named}")

    def __reduce__(self) -> tuple[object, ...]:
        return (
            type(self),
            (self.source, self.line, self.column, self.message, self.field),
        )


def _field_from_message(message: str) -> str | None:
    for pattern in _FIELD_IN_MESSAGE:
        found = pattern.findall(message)
        if found:
            name: str = found[-1]
            return name.rsplit(".", 1)[-1]
    return None


def _field_before(text: str, line: int | None, column: int | None) -> str | None:
    """The field whose value sits at (line, column): the last ``name:`` before it."""
    if line is None or column is None:
        return None
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    before = _QUOTED.sub('""', lines[line - 1][: max(column - 1, 0)])
    names = _FIELD_BEFORE_VALUE.findall(before)
    return names[-1] if names else None


def _strip_location(message: str, line_text: str | None) -> str:
    message = _LOCATION_PREFIX.sub("", message, count=1)
    if line_text is not None:
        message = message.removeprefix(f"'{line_text}': ")
    return message


def parse_model_config(text: str, source: str) -> ModelConfig:
    """Parse ``config.pbtxt`` text; ``source`` names it in errors (usually its path)."""
    pb = _PB_MODEL_CONFIG()
    try:
        text_format.Parse(text, pb)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        lines = text.splitlines()
        line_text = lines[line - 1] if line is not None and 1 <= line <= len(lines) else None
        message = _strip_location(str(exc), line_text)
        field = _field_from_message(message) or _field_before(text, line, column)
        raise ConfigParseError(source, line, column, message, field) from None
    return ModelConfig.parse(pb.SerializeToString())


def _to_pb(config: ModelConfig) -> Message:
    pb = _PB_MODEL_CONFIG()
    pb.ParseFromString(bytes(config))
    return pb


def config_to_json(config: ModelConfig) -> dict[str, object]:
    """The config as Triton's config endpoints return it.

    Proto field names, enums by name, 64-bit integers as JSON numbers (Triton
    prints them so, unlike the proto3 JSON mapping's strings), and every field
    without presence (scalars, repeated, maps) printed even at its default;
    unset sub-messages and oneof members are left out.
    """
    pb = _to_pb(config)
    result: dict[str, object] = json_format.MessageToDict(
        pb,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    _int64_as_numbers(result, pb.DESCRIPTOR)
    return result


_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _int64_as_numbers(data: dict[str, Any], descriptor: Any) -> None:
    """Turn the proto3 JSON mapping's 64-bit integer strings back into numbers, in place."""
    for name, value in data.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                for item in value.values():
                    _int64_as_numbers(item, value_field.message_type)
            elif value_field.type in _INT64_TYPES:
                data[name] = {k: int(v) for k, v in value.items()}
        elif field.message_type is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                _int64_as_numbers(item, field.message_type)
        elif field.type in _INT64_TYPES:
            data[name] = [int(v) for v in value] if isinstance(value, list) else int(value)


def config_from_json(
    data: str | bytes | Mapping[str, object], *, source: str = "config"
) -> ModelConfig:
    """Parse a JSON model config (the load API's ``config`` override).

    Accepts proto field names and their lowerCamelCase JSON names; an unknown
    field is an error (ConfigParseError naming it), as it is for Triton.
    """
    pb = _PB_MODEL_CONFIG()
    try:
        if isinstance(data, Mapping):
            json_format.ParseDict(dict(data), pb)
        else:
            if isinstance(data, bytes):
                data = data.decode("utf-8")
            json_format.Parse(data, pb)
    except UnicodeDecodeError as exc:
        raise ConfigParseError(source, None, None, f"config is not UTF-8: {exc}") from None
    except json_format.ParseError as exc:
        cause = exc.__cause__
        if isinstance(cause, json.JSONDecodeError):
            message = f"invalid JSON: {cause.msg}"
            raise ConfigParseError(source, cause.lineno, cause.colno, message) from None
        # Drop protobuf's "\n Available Fields(except extensions): ..." tail.
        message = str(exc).split("\n", 1)[0]
        raise ConfigParseError(source, None, None, message, _field_from_message(message)) from None
    return ModelConfig.parse(pb.SerializeToString())


def config_to_text(config: ModelConfig) -> str:
    """The config in protobuf text format (what a ``config.pbtxt`` holds)."""
    text: str = text_format.MessageToString(_to_pb(config), as_utf8=True)
    return text
