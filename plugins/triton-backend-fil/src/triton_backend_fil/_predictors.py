"""Reading a model file by its ``model_type`` and predicting with the framework's own code.

XGBoost files run on XGBoost's ``inplace_predict``, LightGBM files on ``Booster.predict`` and
Treelite checkpoints (scikit-learn forests, any Treelite-importable model) on Treelite's GTIL.
Each import happens only when a model of that type loads, so serving a LightGBM model never
imports XGBoost. A predictor belongs to one instance: it is never called from two threads.

``xgboost`` (FIL's legacy binary type) reads whatever XGBoost itself reads from
``xgboost.model``: XGBoost 3 writes UBJSON under that name. A file in the old binary format,
which XGBoost 3 no longer reads, goes through Treelite's legacy loader and GTIL instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kernel import KernelError, ModelContext, Status
from triton_backend_fil._settings import FilSettings

_FORMAT_NAMES = {
    "json": "XGBoost JSON",
    "ubj": "XGBoost UBJSON",
    None: "neither XGBoost JSON nor UBJSON",
}
_WANTED_FORMAT = {"xgboost_json": "json", "xgboost_ubj": "ubj"}
_UBJ_LENGTH_MARKERS = b"iUIlL"
_NATIVE_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")
"""``[06:15:10] /project/src/serializer.cc:193: `` before XGBoost's and Treelite's messages."""


class Predictor(Protocol):
    """A loaded tree model: its feature count and a batch prediction."""

    library: str
    num_feature: int

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """Scores for ``features`` (rows x ``num_feature``, FP32, C-contiguous) as rows x k:
        one column for a regressor or binary classifier, one per class for a multi-class one,
        transformed as the model's objective says (probabilities for a classifier)."""
        ...


def model_path(context: ModelContext, settings: FilSettings) -> Path:
    """The file to read: ``default_model_filename``, else FIL's name for ``model_type``; a
    directory at that path holds the file under FIL's name, as in Triton.

    :raises KernelError: ``UNAVAILABLE`` naming the file and the parameter when it is missing.
    """
    path = context.model_file(settings.default_file)
    if path.is_dir():
        path = path / settings.default_file
    if not path.is_file():
        raise KernelError(
            Status.UNAVAILABLE,
            f"unable to load model '{context.name}': no file '{path}' for parameter"
            f" 'model_type' '{settings.model_type}' (FIL reads '{settings.default_file}' unless"
            " default_model_filename names another file)",
        )
    return path


def load_predictor(path: Path, settings: FilSettings, model: str) -> Predictor:
    """Read ``path`` as ``settings.model_type`` says.

    :raises KernelError: ``INVALID_ARG`` naming ``model_type`` and the file when the file is
        unreadable or is not of that type.
    """
    try:
        if settings.model_type == "lightgbm":
            return _LightGBM(path, settings.threads)
        if settings.model_type == "treelite_checkpoint":
            import treelite

            return _Treelite(treelite.Model.deserialize(str(path)), settings.threads)
        return _load_xgboost(path, settings, model)
    except KernelError:
        raise
    except Exception as exc:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}': parameter 'model_type' is"
            f" '{settings.model_type}', but '{path}' cannot be read as such: {reason(exc)}",
        ) from exc


def reason(exc: BaseException) -> str:
    """What a framework's exception says, without the native log prefix and stack trace."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return _NATIVE_PREFIX.sub("", lines[0])


def xgboost_format(raw: bytes) -> str | None:
    """``"json"`` or ``"ubj"`` when ``raw`` starts like that XGBoost format, else ``None``."""
    head = raw[:64].lstrip()
    if head[:1] != b"{":
        return None
    following = head[1:].lstrip()[:1]
    if following in (b'"', b"}"):
        return "json"
    if head[1:2] and head[1] in _UBJ_LENGTH_MARKERS:
        return "ubj"
    return None


def _load_xgboost(path: Path, settings: FilSettings, model: str) -> Predictor:
    raw = path.read_bytes()
    found = xgboost_format(raw)
    wanted = _WANTED_FORMAT.get(settings.model_type)
    if wanted is not None and found != wanted:
        hint = {"json": " (model_type 'xgboost_json')", "ubj": " (model_type 'xgboost_ubj')"}
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}': parameter 'model_type' is"
            f" '{settings.model_type}', but '{path}' holds {_FORMAT_NAMES[found]}"
            f"{hint.get(found or '', '')}",
        )
    if found is None:
        import treelite

        legacy = treelite.frontend.load_xgboost_model_legacy_binary(str(path))
        return _Treelite(legacy, settings.threads)
    return _XGBoost(raw, settings.threads)


class _XGBoost:
    library = "xgboost"

    def __init__(self, raw: bytes, threads: int) -> None:
        import xgboost

        self.booster = xgboost.Booster()
        # From bytes: XGBoost reads the format from the content; a path without a .json or
        # .ubj suffix would make it guess and warn.
        self.booster.load_model(bytearray(raw))
        objective = json.loads(self.booster.save_config())["learner"]["objective"]["name"]
        if objective == "multi:softmax":
            # softmax predicts labels only; softprob gives the probabilities FIL's outputs are
            # made from (their argmax is softmax's label).
            self.booster.set_param({"objective": "multi:softprob"})
        if threads > 0:
            self.booster.set_param({"nthread": threads})
        self.num_feature = int(self.booster.num_features())

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        scores = np.asarray(self.booster.inplace_predict(features))
        return scores.reshape(len(features), -1)


class _LightGBM:
    library = "lightgbm"

    def __init__(self, path: Path, threads: int) -> None:
        import lightgbm

        self.booster = lightgbm.Booster(model_file=str(path))
        self.options: dict[str, Any] = {"num_threads": threads} if threads > 0 else {}
        self.num_feature = int(self.booster.num_feature())

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        scores = np.asarray(self.booster.predict(features, **self.options))
        return scores.reshape(len(features), -1)


class _Treelite:
    library = "treelite"

    def __init__(self, model: Any, threads: int) -> None:
        self.model = model
        self.threads = threads
        self.num_feature = int(model.num_feature)

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        from treelite import gtil

        # GTIL answers (rows, targets, classes); FIL's output is one row per sample.
        scores = np.asarray(gtil.predict(self.model, features, nthread=self.threads))
        return scores.reshape(len(features), -1)
