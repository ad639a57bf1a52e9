"""Who may call what, and which headers reach the model: tritonserver's restricted API groups
(``--http-restricted-api`` / ``--grpc-restricted-protocol``) and header forwarding
(``--http-header-forward-pattern`` / ``--grpc-header-forward-pattern``).

Sans-IO: a frontend names the API group of a request and hands over its headers; the rules
(group names, the gRPC header prefix, pattern matching) are here once. Everything is built
when the endpoint starts, so a server without these flags does no work per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kernel._errors import KernelError, Status
from kernel._inference import ParameterValue

__all__ = [
    "API_GROUPS",
    "GRPC_HEADER_PREFIX",
    "SHM_REFUSED",
    "HeaderForwarding",
    "Restrictions",
    "merge_restrictions",
    "parse_restriction",
]

API_GROUPS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
"""Triton's restricted API groups, by the names its flags take."""

SHM_REFUSED = "shared memory is not allowed: the server was started with --allow-client-shm=false"
"""Why the shared-memory APIs are refused with ``--allow-client-shm=false``."""

GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
"""gRPC requests carry a restricted key as ``triton-grpc-protocol-<key>`` metadata."""

# parameters a forwarded header may not set: Triton's reserved request parameters
_RESERVED = frozenset(
    ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "binary_data_output")
)


def parse_restriction(text: str) -> tuple[tuple[str, ...], str, str]:
    """``<api>[,<api>...]:<key>=<value>`` as ``(apis, key, value)``.

    :raises ValueError: naming what is wrong (an unknown API group, no key).
    """
    groups, sep, setting = text.partition(":")
    key, eq, value = setting.partition("=")
    if not sep or not eq or not key or not groups:
        raise ValueError(f"expected <api>,<api>...:<key>=<value>, got '{text}'")
    apis = tuple(g.strip() for g in groups.split(","))
    for api in apis:
        if api not in API_GROUPS:
            raise ValueError(f"unknown restricted API '{api}'; allowed: {', '.join(API_GROUPS)}")
    return apis, key, value


def merge_restrictions(
    items: Iterable[tuple[tuple[str, ...], str, str]], flag: str
) -> dict[str, tuple[str, str]]:
    """Several groups as API -> (key, value); an API may be in one group only, as in Triton.

    :raises ValueError: an API named by two groups.
    """
    merged: dict[str, tuple[str, str]] = {}
    for apis, key, value in items:
        for api in apis:
            if api in merged:
                raise ValueError(f"{flag}: API '{api}' is restricted more than once")
            merged[api] = (key, value)
    return merged


class Restrictions:
    """The restricted groups of one endpoint; ``bool(self)`` is false when there are none."""

    __slots__ = ("_groups", "_wording")

    def __init__(self, groups: Mapping[str, tuple[str, str]], *, grpc: bool) -> None:
        prefix = GRPC_HEADER_PREFIX if grpc else ""
        self._groups = {api: (prefix + key.lower(), value) for api, (key, value) in groups.items()}
        self._wording = "This protocol is restricted" if grpc else "This API is restricted"

    def __bool__(self) -> bool:
        return bool(self._groups)

    def refusal(self, group: str | None, headers: Mapping[str, str]) -> str | None:
        """Triton's message when a request to ``group`` lacks the group's header (``headers``
        by lower-case name), else ``None``."""
        if group is None:
            return None
        wanted = self._groups.get(group)
        if wanted is None or headers.get(wanted[0]) == wanted[1]:
            return None
        return f"{self._wording}, expecting header '{wanted[0]}'"


@dataclass(frozen=True, slots=True)
class HeaderForwarding:
    """Headers whose name matches the pattern become string parameters of the request.

    The pattern matches anywhere in the name (RE2's partial match, as Triton) and ignores case
    unless it starts with ``(?-i)``. Header names arrive lower-case (HTTP/2 requires it; the
    HTTP/1.1 transport folds them), so the parameter keys are lower-case.
    """

    regex: re.Pattern[str]

    @classmethod
    def compile(cls, pattern: str, flag: str) -> HeaderForwarding | None:
        """``None`` for an empty pattern (nothing forwarded).

        :raises ValueError: a pattern that is not a regular expression.
        """
        if not pattern:
            return None
        flags: int = re.IGNORECASE
        if pattern.startswith("(?-i)"):
            pattern, flags = pattern[len("(?-i)") :], 0
        try:
            return cls(re.compile(pattern, flags))
        except re.error as exc:
            raise ValueError(f"{flag}: invalid regular expression '{pattern}': {exc}") from None

    def forward(
        self, headers: Iterable[tuple[str, str]], parameters: dict[str, ParameterValue]
    ) -> None:
        """Add the matching headers to ``parameters`` (a parameter the request set wins).

        :raises KernelError: ``INVALID_ARG`` for a matching header named like one of Triton's
            reserved parameters.
        """
        search = self.regex.search
        for name, value in headers:
            if name.startswith(":") or not search(name):
                continue
            if name in _RESERVED or name.startswith("triton_"):
                raise KernelError(
                    Status.INVALID_ARG,
                    f"header '{name}' matches the header forward pattern but is a reserved"
                    " parameter name",
                )
            parameters.setdefault(name, value)
