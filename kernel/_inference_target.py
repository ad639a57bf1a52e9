"""What a frontend needs to serve inference requests for one loaded model version.

:meth:`InferenceServer.prepare <kernel._server.InferenceServer.prepare>` answers a request's
model name and version with an :class:`InferenceTarget`: the config, the request validator, the
decoupled flag, classification labels and the version to submit to. A frontend routes each
request once, through it, and never touches :mod:`kernel._models`. A target lives as long as its
version: a reload makes new targets, so what they cache (labels) follows the reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kernel._proto.inference import ModelConfig
from kernel._validation import RequestValidator

if TYPE_CHECKING:
    from kernel._models import ModelVersion

__all__ = ["InferenceTarget"]


class InferenceTarget:
    """One loaded model version as the frontends see it (built once per version)."""

    __slots__ = ("_labels", "batched", "config", "decoupled", "model", "name", "version")

    def __init__(self, model: ModelVersion) -> None:
        self.model = model
        """The version requests are submitted to (the server's business, not the frontends')."""
        self.name = model.name
        self.version = model.version
        self.config: ModelConfig = model.config
        self.decoupled = model.decoupled
        self.batched = model.config.max_batch_size > 0
        self._labels: dict[str, list[str]] = {}

    @property
    def validator(self) -> RequestValidator:
        return self.model.validator

    def labels(self, output: str) -> list[str]:
        """The classification labels of ``output`` (its ``label_filename`` in the model folder,
        one per line; none when it has no such file), read once for this version."""
        labels = self._labels.get(output)
        if labels is None:
            labels = []
            for spec in self.config.output:
                if spec.name == output and spec.label_filename:
                    labels = _read_labels(self.model.context.model_dir, spec.label_filename)
            self._labels[output] = labels
        return labels


def _read_labels(model_dir: Path, filename: str) -> list[str]:
    """The lines of ``filename`` inside ``model_dir``; none for a file that is missing,
    unreadable or outside the folder (a load's config comes from the network: it must not
    make the server read and answer with other files)."""
    folder = model_dir.resolve()
    path = (folder / filename).resolve()
    if not path.is_relative_to(folder):
        return []
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
