"""Where and how log lines are written: tritonserver's ``--log-*`` flags.

One :class:`KernelLogHandler` on the root logger writes every line, to stderr or appended to
``--log-file``, in one of three formats:

- ``default``: tritonserver's glog-like ``I1205 21:32:24.123456 1234 logger] message``;
- ``ISO8601``: tritonserver's ``2026-12-05T21:32:24Z I 1234 logger] message``;
- ``json``: one JSON object a line (``time``, ``level``, ``logger``, ``model``, ``message`` and
  ``request_id`` when the line is about one request), for log pipelines that parse lines.

Triton enables info, warning and error lines independently (``--log-info=false`` keeps
warnings), which a handler filter does; the ``kernel`` logger's level only cuts what no setting
shows, so a disabled level costs one level check. The log settings API changes the format and
levels of the running handler (:func:`apply_log_settings`), never the file.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

__all__ = [
    "FORMATS",
    "REQUEST_IDS",
    "KernelLogHandler",
    "apply_log_settings",
    "configure_logging",
    "model_of",
]

FORMATS = ("default", "ISO8601", "json")
_LETTERS = {
    logging.DEBUG: "I",  # Triton's verbose lines are info lines ("I...")
    logging.INFO: "I",
    logging.WARNING: "W",
    logging.ERROR: "E",
    logging.CRITICAL: "E",
}
_MODEL_PREFIX = "kernel.model."

REQUEST_IDS: contextvars.ContextVar[str] = contextvars.ContextVar("request_ids", default="")
"""The ids of the requests an ``execute`` is running for (comma-joined), while JSON lines are
written (:data:`json_lines`): a model's line during ``execute`` then names its requests."""

json_lines = False
"""Whether a JSON log output is installed; the kernel sets :data:`REQUEST_IDS` only then, so
other formats cost one module attribute check per batch."""


def model_of(record: logging.LogRecord) -> str | None:
    """The model a line is about: ``extra={"model": ...}``, else the model's logger
    (``kernel.model.<name>[.<instance>]``, the logger models and backends are given)."""
    model = getattr(record, "model", None)
    if isinstance(model, str):
        return model
    name = record.name
    if name.startswith(_MODEL_PREFIX):
        return name[len(_MODEL_PREFIX) :].split(".", 1)[0] or None
    return None


class _Formatter(logging.Formatter):
    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self._pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        letter = _LETTERS.get(record.levelno, "E" if record.levelno > logging.ERROR else "I")
        if self.form == "json":
            line: dict[str, object] = {
                "time": _iso_time(record.created, micro=True),
                "level": _level_name(record.levelno),
                "logger": record.name,
                "model": model_of(record),
                "message": message,
            }
            request_id = getattr(record, "request_id", None) or REQUEST_IDS.get()
            if request_id:
                line["request_id"] = str(request_id)
            return json.dumps(line, ensure_ascii=False)
        if self.form == "ISO8601":
            stamp = _iso_time(record.created, micro=False)
            return f"{stamp} {letter} {self._pid} {record.name}] {message}"
        tm = time.gmtime(record.created)
        micros = int((record.created % 1) * 1_000_000)
        stamp = time.strftime("%m%d %H:%M:%S", tm)
        return f"{letter}{stamp}.{micros:06d} {self._pid} {record.name}] {message}"


def _iso_time(created: float, *, micro: bool) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    if micro:
        return f"{stamp}.{int((created % 1) * 1_000_000):06d}Z"
    return f"{stamp}Z"


def _level_name(levelno: int) -> str:
    if levelno <= logging.DEBUG:
        return "VERBOSE"
    if levelno <= logging.INFO:
        return "INFO"
    if levelno <= logging.WARNING:
        return "WARNING"
    return "ERROR"


class KernelLogHandler(logging.StreamHandler[TextIO]):
    """The server's one log output; its format and enabled levels follow the log settings."""

    def __init__(
        self, stream: TextIO, settings: Mapping[str, object], *, owns_stream: bool = False
    ) -> None:
        super().__init__(stream)
        self._owns_stream = owns_stream
        self.info = self.warning = self.error = True
        self.verbose = 0
        self.formatter_name = "default"
        self.apply(settings)

    def apply(self, settings: Mapping[str, object]) -> None:
        """Take ``log_info``/``log_warning``/``log_error``/``log_verbose_level``/``log_format``."""
        self.info = bool(settings.get("log_info", True))
        self.warning = bool(settings.get("log_warning", True))
        self.error = bool(settings.get("log_error", True))
        verbose = settings.get("log_verbose_level", 0)
        self.verbose = verbose if isinstance(verbose, int) else 0
        form = settings.get("log_format", "default")
        self.formatter_name = form if isinstance(form, str) else "default"
        self.setFormatter(_Formatter(self.formatter_name))

    def close(self) -> None:
        """Close the log file this handler opened (``--log-file``), never stderr."""
        try:
            if self._owns_stream:
                self.stream.close()
        finally:
            super().close()

    def filter(self, record: logging.LogRecord) -> bool:
        level = record.levelno
        if level >= logging.ERROR:
            allowed = self.error
        elif level >= logging.WARNING:
            allowed = self.warning
        elif level >= logging.INFO:
            allowed = self.info
        else:
            allowed = self.verbose > 0
        return allowed and bool(super().filter(record))


def configure_logging(settings: Mapping[str, object], log_file: Path | None = None) -> None:
    """Install the server's log handler on the root logger (``kernel serve``).

    ``log_file`` is opened for appending (created if missing), as tritonserver's
    ``--log-file``; lines go to stderr otherwise.

    :raises OSError: the log file cannot be opened.
    """
    stream: TextIO = (
        sys.stderr if log_file is None else open(log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, KernelLogHandler):
            root.removeHandler(handler)
            handler.close()
    root.addHandler(KernelLogHandler(stream, settings, owns_stream=log_file is not None))
    verbose = settings.get("log_verbose_level", 0)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    _note_json()


def apply_log_settings(settings: Mapping[str, object]) -> None:
    """Give accepted log settings to the installed handler (none in tests: then a no-op)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, KernelLogHandler):
            handler.apply(settings)
    _note_json()


def _note_json() -> None:
    global json_lines
    json_lines = any(
        isinstance(h, KernelLogHandler) and h.formatter_name == "json"
        for h in logging.getLogger().handlers
    )
