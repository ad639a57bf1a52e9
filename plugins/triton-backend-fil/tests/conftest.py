"""Fixtures of the FIL backend tests: tiny tree models trained at test time, written in each
format FIL reads, and served repositories driven through ``tritonclient``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightgbm
import numpy as np
import numpy.typing as npt
import pytest
import treelite
import treelite.sklearn
import xgboost
from sklearn.ensemble import (  # type: ignore[import-untyped, unused-ignore]
    GradientBoostingClassifier,
    RandomForestClassifier,
)
from triton_backend_fil import FilBackend, FilInstance

from kernel import ModelConfig, testing
from kernel.testing import write_model
from kernel.testing.clients import PROTOCOLS, TritonClients, serving

FEATURES = 4
FILE_NAMES = {
    "xgboost": "xgboost.model",
    "xgboost_json": "xgboost.json",
    "xgboost_ubj": "xgboost.ubj",
    "lightgbm": "model.txt",
    "treelite_checkpoint": "checkpoint.tl",
}


@dataclass(frozen=True)
class Data:
    """Training rows and the rows the tests send (FP32, ``FEATURES`` columns)."""

    train: npt.NDArray[np.float32]
    binary: npt.NDArray[np.int64]
    classes: npt.NDArray[np.int64]
    target: npt.NDArray[np.float32]
    query: npt.NDArray[np.float32]


def make_data() -> Data:
    rng = np.random.default_rng(0)
    train = rng.standard_normal((120, FEATURES)).astype(np.float32)
    return Data(
        train=train,
        binary=(train[:, 0] + 0.5 * train[:, 1] > 0).astype(np.int64),
        classes=np.digitize(train[:, 2], [-0.5, 0.5]).astype(np.int64),
        target=(2 * train[:, 0] - train[:, 3]).astype(np.float32),
        query=rng.standard_normal((7, FEATURES)).astype(np.float32),
    )


@dataclass(frozen=True)
class Trained:
    """The tiny models of the suite, each trained once per session."""

    data: Data
    xgb_classifier: Any
    xgb_regressor: Any
    lgbm_classifier: Any
    random_forest: Any
    gradient_boosting: Any


def train_models() -> Trained:
    data = make_data()
    small: dict[str, Any] = {"n_estimators": 4, "n_jobs": 1, "random_state": 0}
    return Trained(
        data=data,
        xgb_classifier=xgboost.XGBClassifier(max_depth=3, **small).fit(data.train, data.binary),
        xgb_regressor=xgboost.XGBRegressor(max_depth=3, **small).fit(data.train, data.target),
        lgbm_classifier=lightgbm.LGBMClassifier(num_leaves=4, verbose=-1, **small).fit(
            data.train, data.classes
        ),
        random_forest=RandomForestClassifier(max_depth=3, **small).fit(data.train, data.binary),
        gradient_boosting=GradientBoostingClassifier(
            n_estimators=4, max_depth=2, random_state=0
        ).fit(data.train, data.binary),
    )


def model_bytes(estimator: Any, model_type: str) -> bytes:
    """``estimator`` saved as ``model_type``, as a user would save it for FIL."""
    if model_type == "treelite_checkpoint":
        if isinstance(estimator, xgboost.XGBModel):
            tl_model = treelite.frontend.from_xgboost(estimator.get_booster())
        elif isinstance(estimator, lightgbm.LGBMModel):
            tl_model = treelite.frontend.from_lightgbm(estimator.booster_)
        else:
            tl_model = treelite.sklearn.import_model(estimator)
        return bytes(tl_model.serialize_bytes())
    if model_type == "lightgbm":
        return str(estimator.booster_.model_to_string()).encode()
    # ``xgboost`` (FIL's legacy binary type): XGBoost 3 writes UBJSON under ``xgboost.model``.
    raw_format = "json" if model_type == "xgboost_json" else "ubj"
    return bytes(estimator.get_booster().save_raw(raw_format))


def fil_config(
    *,
    model_type: str,
    features: int = FEATURES,
    columns: int = 1,
    parameters: dict[str, str] | None = None,
    max_batch_size: int = 8,
) -> str:
    """A Triton FIL config (``input__0`` -> ``output__0``) with FIL's parameters."""
    entries = {"model_type": model_type, **(parameters or {})}
    params = ",\n".join(
        f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in entries.items()
    )
    return f"""
backend: "fil"
max_batch_size: {max_batch_size}
input [ {{ name: "input__0" data_type: TYPE_FP32 dims: [ {features} ] }} ]
output [ {{ name: "output__0" data_type: TYPE_FP32 dims: [ {columns} ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters [
{params}
]
"""


def write_fil(
    repo: Path, name: str, config: str | None, content: bytes, *, file: str | None = None
) -> Path:
    """A model folder holding ``config.pbtxt`` and ``1/<file>``."""
    return write_model(repo, name, config, files={f"1/{file}": content})


@pytest.fixture(scope="session")
def trained() -> Trained:
    """The suite's tiny models (trained in well under a second)."""
    return train_models()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty model repository."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[..., TritonClients]]:
    """``serve(repo, **server_options)``: a server on free loopback ports for the module."""
    with serving() as start:
        yield start


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once over gRPC and once over HTTP."""
    return str(request.param)


def unit_instance(folder: Path, config: ModelConfig, files: dict[str, bytes]) -> FilInstance:
    """An initialized instance made the way the kernel makes it, without a server."""
    model = testing.unit_model(
        FilBackend().create_model,
        folder,
        config,
        files={f"1/{name}": content for name, content in files.items()},
        auto_complete=False,
        logger=logging.getLogger("test.fil"),
    )
    return cast(FilInstance, testing.unit_instance(model))


class Kit:
    """What the tests build models and configs with (handed out by the ``kit`` fixture)."""

    features = FEATURES
    file_names = FILE_NAMES
    protocols = PROTOCOLS
    model_bytes = staticmethod(model_bytes)
    fil_config = staticmethod(fil_config)
    write_fil = staticmethod(write_fil)
    unit_instance = staticmethod(unit_instance)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    """Model savers, config builders and the unit-instance maker."""
    return Kit
