"""Which forward arguments a model may write into, read from its graph's operator schemas.

Inputs reach the model as tensors over the request's memory, often read-only wire bytes that
nothing may write into. A model that updates an input in place (``x.mul_(2)``, ``x /= 255``)
must get a private copy of it instead. Both TorchScript graphs and exported programs name
operator schemas whose alias annotations say which arguments an operator writes (``Tensor(a!)``)
and which results alias an argument (views). Following aliases from each forward argument
through the graph gives the arguments that may be written. The answer errs towards "written":
the only cost of a wrong "written" is a copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

_UNKNOWN_CALLS = ("prim::CallMethod", "prim::CallFunction")
"""Calls the inlined graph still holds (interfaces): what they write is unknown."""


def _writes_and_aliases(schema: Any) -> tuple[list[int], bool]:
    """The argument positions an operator writes, and whether a result may alias an argument."""
    written = [
        i
        for i, arg in enumerate(schema.arguments)
        if arg.alias_info is not None and arg.alias_info.is_write
    ]
    aliasing = any(ret.alias_info is not None for ret in schema.returns)
    return written, aliasing


def _parse(text: str) -> Any:
    try:
        return torch._C.parse_schema(text)
    except RuntimeError:
        return None


def torchscript_written_args(module: Any) -> frozenset[int]:
    """Positions (``self`` excluded) of the forward arguments a TorchScript module may write."""
    graph = module.inlined_graph
    inputs = list(graph.inputs())
    if inputs and inputs[0].type().kind() == "ClassType":
        inputs = inputs[1:]
    aliases: dict[int, frozenset[int]] = {v.unique(): frozenset({i}) for i, v in enumerate(inputs)}
    written: set[int] = set()

    def alias_of(values: Iterable[Any]) -> frozenset[int]:
        return frozenset().union(*(aliases.get(v.unique(), frozenset()) for v in values))

    def walk(nodes: Iterable[Any]) -> None:
        for node in nodes:
            node_inputs = list(node.inputs())
            reached = alias_of(node_inputs)
            schema_text = node.schema()
            schema = None if schema_text == "(no schema)" else _parse(schema_text)
            if schema is None:
                if node.kind() in _UNKNOWN_CALLS or schema_text != "(no schema)":
                    written.update(reached)
                for block in node.blocks():
                    for param in block.inputs():
                        aliases[param.unique()] = reached
                    walk(block.nodes())
                    reached |= alias_of(block.outputs())
                result = reached  # lists, tuples, control flow: anything in may come out
            else:
                positions, aliasing = _writes_and_aliases(schema)
                for position in positions:
                    if position < len(node_inputs):
                        written.update(alias_of([node_inputs[position]]))
                result = reached if aliasing else frozenset()
            if result:
                for out in node.outputs():
                    aliases[out.unique()] = result

    walk(graph.nodes())
    return frozenset(written)


def exported_written_args(program: Any) -> frozenset[int]:
    """Positions of the user inputs an exported program (``torch.export``) may write."""
    user_inputs = list(program.graph_signature.user_inputs)
    aliases: dict[Any, frozenset[int]] = {}
    written: set[int] = set()

    def nodes_in(value: Any) -> list[Any]:
        if isinstance(value, torch.fx.Node):
            return [value]
        if isinstance(value, list | tuple):
            return [n for item in value for n in nodes_in(item)]
        if isinstance(value, dict):
            return [n for item in value.values() for n in nodes_in(item)]
        return []

    def alias_of(values: Iterable[Any]) -> frozenset[int]:
        return frozenset().union(*(aliases.get(n, frozenset()) for n in nodes_in(list(values))))

    for node in program.graph.nodes:
        if node.op == "placeholder":
            if node.name in user_inputs:
                aliases[node] = frozenset({user_inputs.index(node.name)})
            continue
        if node.op != "call_function":
            continue
        reached = alias_of([*node.args, *node.kwargs.values()])
        schema = getattr(node.target, "_schema", None)
        if schema is None:
            aliases[node] = reached  # getitem, higher-order ops: anything in may come out
            continue
        positions, aliasing = _writes_and_aliases(schema)
        for position in positions:
            arg = schema.arguments[position]
            value = node.args[position] if position < len(node.args) else node.kwargs.get(arg.name)
            written.update(alias_of([value]))
        if aliasing:
            aliases[node] = reached
    return frozenset(written)
