"""Loads that must fail, through tritonclient's load API: each message names the parameter or
tensor at fault and the model file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tritonclient.utils import InferenceServerException

from kernel import ModelControlMode


@pytest.fixture(scope="module")
def explicit(serve: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server in explicit mode over an empty repository the tests fill."""
    repo = tmp_path_factory.mktemp("fil_bad_models")
    return serve(repo, model_control_mode=ModelControlMode.EXPLICIT)


def _load_error(served: Any, protocol: str, name: str) -> str:
    client = served.client(protocol)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.load_model(name)
        return str(caught.value.message())
    finally:
        client.close()


def _model_file(served: Any, name: str, file: str) -> Path:
    return Path(served.repository) / name / "1" / file


def test_unknown_model_type(explicit: Any, kit: Any, trained: Any, protocol: str) -> None:
    name = f"unknown_type_{protocol}"
    content = kit.model_bytes(trained.xgb_regressor, "xgboost_json")
    kit.write_fil(
        explicit.repository, name, kit.fil_config(model_type="xgb"), content, file="x.json"
    )
    message = _load_error(explicit, protocol, name)
    assert "'model_type'" in message and "'xgb'" in message
    assert str(Path(explicit.repository) / name / "1") in message


@pytest.mark.parametrize(
    ("model_type", "saved_as", "fragment"),
    [
        ("xgboost_json", "xgboost_ubj", "holds XGBoost UBJSON (model_type 'xgboost_ubj')"),
        ("xgboost_ubj", "xgboost_json", "holds XGBoost JSON (model_type 'xgboost_json')"),
        ("lightgbm", "xgboost_json", "cannot be read as such"),
        ("treelite_checkpoint", "lightgbm", "cannot be read as such"),
        ("xgboost", "lightgbm", "cannot be read as such"),
    ],
)
def test_model_type_that_does_not_fit_the_file(
    explicit: Any, kit: Any, trained: Any, model_type: str, saved_as: str, fragment: str
) -> None:
    name = f"wrong_{model_type}_{saved_as}"
    estimator = trained.lgbm_classifier if saved_as == "lightgbm" else trained.xgb_regressor
    file = kit.file_names[model_type]
    config = kit.fil_config(model_type=model_type)
    kit.write_fil(
        explicit.repository, name, config, kit.model_bytes(estimator, saved_as), file=file
    )
    message = _load_error(explicit, "http", name)
    assert f"parameter 'model_type' is '{model_type}'" in message
    assert str(_model_file(explicit, name, file)) in message
    assert fragment in message


def test_missing_file_names_model_type_and_the_file(
    explicit: Any, kit: Any, trained: Any, protocol: str
) -> None:
    name = f"missing_file_{protocol}"
    content = kit.model_bytes(trained.xgb_regressor, "xgboost_json")
    config = kit.fil_config(model_type="lightgbm")
    kit.write_fil(explicit.repository, name, config, content, file="xgboost.json")
    message = _load_error(explicit, protocol, name)
    assert "'model_type' 'lightgbm'" in message
    assert str(_model_file(explicit, name, "model.txt")) in message


def test_feature_count_that_disagrees_with_the_model(
    explicit: Any, kit: Any, trained: Any, protocol: str
) -> None:
    name = f"features_{protocol}"
    content = kit.model_bytes(trained.xgb_regressor, "xgboost_ubj")
    config = kit.fil_config(model_type="xgboost_ubj", features=5)
    kit.write_fil(explicit.repository, name, config, content, file="xgboost.ubj")
    message = _load_error(explicit, protocol, name)
    assert "input 'input__0' has 5 features" in message
    assert "takes 4" in message and "model_type 'xgboost_ubj'" in message
    assert str(_model_file(explicit, name, "xgboost.ubj")) in message


def test_output_width_that_disagrees_with_the_parameters(
    explicit: Any, kit: Any, trained: Any
) -> None:
    name = "proba_width"
    content = kit.model_bytes(trained.lgbm_classifier, "lightgbm")
    config = kit.fil_config(model_type="lightgbm", columns=1, parameters={"predict_proba": "true"})
    kit.write_fil(explicit.repository, name, config, content, file="model.txt")
    message = _load_error(explicit, "grpc", name)
    assert "output 'output__0' has 1 columns" in message and "gives 3" in message
    assert "predict_proba" in message


def test_invalid_boolean_names_the_parameter(explicit: Any, kit: Any, trained: Any) -> None:
    name = "bad_boolean"
    content = kit.model_bytes(trained.xgb_regressor, "xgboost_json")
    config = kit.fil_config(model_type="xgboost_json", parameters={"output_class": "yes"})
    kit.write_fil(explicit.repository, name, config, content, file="xgboost.json")
    message = _load_error(explicit, "http", name)
    assert "parameter 'output_class' has the invalid value 'yes'" in message


def test_non_fp32_input_is_refused(explicit: Any, kit: Any, trained: Any) -> None:
    name = "fp64_input"
    content = kit.model_bytes(trained.xgb_regressor, "xgboost_json")
    config = kit.fil_config(model_type="xgboost_json").replace(
        "data_type: TYPE_FP32 dims: [ 4 ]", "data_type: TYPE_FP64 dims: [ 4 ]"
    )
    kit.write_fil(explicit.repository, name, config, content, file="xgboost.json")
    message = _load_error(explicit, "http", name)
    assert "input 'input__0' has datatype TYPE_FP64" in message
