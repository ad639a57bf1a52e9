"""Triton's six log settings, one set per server, shared by the HTTP and gRPC endpoints.

The endpoints parse and check updates in their own protocol's terms; the values live here, on
the server, so a change made through one endpoint is what the other reports.
"""

from __future__ import annotations

import logging

__all__ = ["LogValue", "default_log_settings", "log_level"]

LogValue = bool | int | str


def default_log_settings(verbose: int = 0) -> dict[str, LogValue]:
    """tritonserver's defaults, with ``--log-verbose``."""
    return {
        "log_file": "",
        "log_info": True,
        "log_warning": True,
        "log_error": True,
        "log_verbose_level": verbose,
        "log_format": "default",
    }


def log_level(settings: dict[str, LogValue]) -> int:
    """The ``logging`` level the settings mean for the ``kernel`` logger."""
    if settings["log_verbose_level"]:
        return logging.DEBUG
    if settings["log_info"]:
        return logging.INFO
    if settings["log_warning"]:
        return logging.WARNING
    if settings["log_error"]:
        return logging.ERROR
    return logging.CRITICAL + 1
