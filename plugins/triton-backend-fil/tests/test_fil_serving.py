"""Tree models saved in every format FIL reads, served through tritonclient (gRPC and HTTP) and
compared with the framework's own ``predict`` / ``predict_proba``."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import xgboost

from kernel import ModelControlMode

XGBOOST_TYPES = ("xgboost", "xgboost_json", "xgboost_ubj", "treelite_checkpoint")
LIGHTGBM_TYPES = ("lightgbm", "treelite_checkpoint")

Expect = Callable[[Any, npt.NDArray[np.float32]], npt.NDArray[Any]]


def _proba(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    return np.asarray(model.predict_proba(x))


def _predict(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    return np.asarray(model.predict(x)).reshape(len(x), 1)


def _positive(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    return np.asarray(model.predict_proba(x))[:, 1:]


def _above_03(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    return (np.asarray(model.predict_proba(x))[:, 1:] > 0.3).astype(np.float32)


@dataclass(frozen=True)
class Case:
    """One served model: an estimator saved as ``model_type``, FIL parameters, the reference."""

    estimator: str
    model_type: str
    columns: int
    expect: Expect
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        flags = "_".join(f"{k}_{v}".replace(".", "") for k, v in self.parameters.items())
        return "_".join(filter(None, (self.estimator, self.model_type, flags)))


PROBA = {"output_class": "true", "predict_proba": "true"}
CLASS = {"output_class": "true"}

CASES = [
    # Every format each framework saves: probabilities, regression scores.
    *(Case("xgb_classifier", t, 2, _proba, PROBA) for t in XGBOOST_TYPES),
    *(Case("xgb_regressor", t, 1, _predict) for t in XGBOOST_TYPES),
    *(Case("lgbm_classifier", t, 3, _proba, PROBA) for t in LIGHTGBM_TYPES),
    Case("random_forest", "treelite_checkpoint", 2, _proba, PROBA),
    Case("gradient_boosting", "treelite_checkpoint", 2, _proba, PROBA),
    # FIL's other output shapes: class labels (threshold, argmax), the positive class's score.
    Case("xgb_classifier", "xgboost_ubj", 1, _predict, CLASS),
    Case("xgb_classifier", "xgboost_json", 1, _above_03, {**CLASS, "threshold": "0.3"}),
    Case("xgb_classifier", "xgboost_json", 1, _positive, {"output_class": "false"}),
    Case("lgbm_classifier", "lightgbm", 1, _predict, {"is_classifier": "true"}),
    Case("random_forest", "treelite_checkpoint", 1, _predict, {**CLASS, "cpu_nthread": "1"}),
]


@pytest.fixture(scope="module")
def served(
    trained: Any, kit: Any, serve: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """One server holding every case's model folder."""
    repo = tmp_path_factory.mktemp("fil_models")
    for case in CASES:
        estimator = getattr(trained, case.estimator)
        config = kit.fil_config(
            model_type=case.model_type, columns=case.columns, parameters=case.parameters
        )
        content = kit.model_bytes(estimator, case.model_type)
        kit.write_fil(repo, case.name, config, content, file=kit.file_names[case.model_type])
    return serve(repo)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_served_predictions_match_the_framework(
    served: Any, trained: Any, protocol: str, case: Case
) -> None:
    x = trained.data.query
    got = served.infer(protocol, case.name, {"input__0": x})["output__0"]
    want = case.expect(getattr(trained, case.estimator), x)
    assert got.dtype == np.float32
    assert got.shape == (len(x), case.columns)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_one_row_and_a_full_batch(served: Any, trained: Any, protocol: str) -> None:
    model = trained.xgb_regressor
    rng = np.random.default_rng(3)
    for rows in (1, 8):
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        got = served.infer(protocol, "xgb_regressor_xgboost_json", {"input__0": x})["output__0"]
        np.testing.assert_allclose(got[:, 0], model.predict(x), rtol=1e-5, atol=1e-6)


def test_default_model_filename_and_no_batching(
    kit: Any, trained: Any, repo: Path, serve: Callable[..., Any], protocol: str
) -> None:
    """``default_model_filename`` replaces FIL's name; ``max_batch_size: 0`` takes [rows, F]."""
    config = kit.fil_config(model_type="lightgbm", columns=3, parameters=PROBA, max_batch_size=0)
    config = config.replace("dims: [ 4 ]", "dims: [ -1, 4 ]").replace(
        "dims: [ 3 ]", "dims: [ -1, 3 ]"
    )
    config += 'default_model_filename: "forest.txt"\n'
    content = kit.model_bytes(trained.lgbm_classifier, "lightgbm")
    kit.write_fil(repo, "renamed", config, content, file="forest.txt")
    served = serve(repo, model_control_mode=ModelControlMode.EXPLICIT, load_models=["renamed"])
    x = trained.data.query
    got = served.infer(protocol, "renamed", {"input__0": x})["output__0"]
    np.testing.assert_allclose(got, trained.lgbm_classifier.predict_proba(x), rtol=1e-5, atol=1e-6)


EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_example_model_is_served_and_rebuilt_by_its_script(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    """The committed ``fil_xgboost`` predicts as the script's freshly trained model does."""
    spec = importlib.util.spec_from_file_location(
        "build_fil_models", EXAMPLES / "build_fil_models.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.build(tmp_path)
    committed_folder = EXAMPLES / "model_repository" / "fil_xgboost"
    rebuilt_folder = tmp_path / "fil_xgboost"
    assert (rebuilt_folder / "config.pbtxt").read_text() == (
        committed_folder / "config.pbtxt"
    ).read_text()
    rebuilt, committed = xgboost.Booster(), xgboost.Booster()
    rebuilt.load_model(rebuilt_folder / "1" / "xgboost.json")
    committed.load_model(committed_folder / "1" / "xgboost.json")
    x = np.random.default_rng(5).standard_normal((16, 4)).astype(np.float32)
    np.testing.assert_allclose(rebuilt.inplace_predict(x), committed.inplace_predict(x), rtol=1e-6)

    served = serve(
        EXAMPLES / "model_repository",
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=["fil_xgboost"],
    )
    x = np.array([[0.5, -1.0, 0.25, 2.0], [-1.5, 0.0, 1.0, -0.5]], np.float32)
    got = served.infer("http", "fil_xgboost", {"input__0": x})["output__0"]
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
