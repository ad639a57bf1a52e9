"""How a text is cut into the words streamed back, and how a word is styled."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

_WORD = re.compile(r"\S+")


def words(text: str) -> Iterator[str]:
    """The words of ``text``, in order (runs of non-space characters)."""
    return (match.group(0) for match in _WORD.finditer(text))


def styled(word: str, style: Mapping[str, str]) -> str:
    """``word`` in the model's style: ``case`` (``upper``, ``lower`` or ``keep``), then
    ``suffix`` appended."""
    case = style.get("case", "keep")
    if case == "upper":
        word = word.upper()
    elif case == "lower":
        word = word.lower()
    return word + style.get("suffix", "")
