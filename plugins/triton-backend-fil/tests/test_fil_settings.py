"""FIL's parameters read from a config, its output shapes, and the XGBoost format sniffing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from triton_backend_fil._outputs import output_columns, shape_output
from triton_backend_fil._predictors import xgboost_format
from triton_backend_fil._settings import FilSettings, read_settings

from kernel import KernelError, ModelConfig
from kernel.config import ModelParameter

FOLDER = Path("/models/forest/1")


def _config(**parameters: str) -> ModelConfig:
    return ModelConfig(
        name="forest",
        parameters={k: ModelParameter(string_value=v) for k, v in parameters.items()},
    )


def test_defaults_are_fils() -> None:
    settings = read_settings(_config(), FOLDER)
    assert settings == FilSettings(model_type="xgboost", threshold=0.5, threads=-1)
    assert settings.default_file == "xgboost.model"


@pytest.mark.parametrize(
    ("model_type", "file"),
    [
        ("xgboost_json", "xgboost.json"),
        ("xgboost_ubj", "xgboost.ubj"),
        ("lightgbm", "model.txt"),
        ("treelite_checkpoint", "checkpoint.tl"),
    ],
)
def test_default_file_per_model_type(model_type: str, file: str) -> None:
    assert read_settings(_config(model_type=model_type), FOLDER).default_file == file


def test_parameters_are_read() -> None:
    settings = read_settings(
        _config(
            output_class="TRUE",
            predict_proba="1",
            threshold="0.25",
            cpu_nthread="3",
            storage_type="SPARSE",
            algo="NAIVE",
        ),
        FOLDER,
    )
    assert settings.output_class and settings.predict_proba
    assert settings.threshold == 0.25 and settings.threads == 3
    assert settings.ignored == ("algo", "storage_type")


def test_is_classifier_is_output_class_s_newer_name() -> None:
    assert read_settings(_config(is_classifier="true"), FOLDER).output_class
    with pytest.raises(KernelError, match="'output_class' and 'is_classifier'"):
        read_settings(_config(is_classifier="true", output_class="false"), FOLDER)


@pytest.mark.parametrize(
    ("key", "value"),
    [("predict_proba", "maybe"), ("threshold", "high"), ("cpu_nthread", "two"),
     ("cpu_nthread", "-4"), ("model_type", "pickle")],
)  # fmt: skip
def test_invalid_values_name_the_parameter(key: str, value: str) -> None:
    with pytest.raises(KernelError, match=f"parameter '{key}' has the invalid value '{value}'"):
        read_settings(_config(**{key: value}), FOLDER)


def test_output_shapes() -> None:
    binary = np.array([[0.2], [0.7]])
    multi = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    proba = FilSettings(output_class=True, predict_proba=True)
    labels = FilSettings(output_class=True, threshold=0.5)
    np.testing.assert_allclose(shape_output(binary, proba), [[0.8, 0.2], [0.3, 0.7]], rtol=1e-6)
    np.testing.assert_array_equal(shape_output(binary, labels), [[0.0], [1.0]])
    np.testing.assert_array_equal(
        shape_output(binary, FilSettings(output_class=True, threshold=0.1)), [[1.0], [1.0]]
    )
    np.testing.assert_array_equal(shape_output(multi, labels), [[1.0], [0.0]])
    np.testing.assert_array_equal(shape_output(multi, proba), multi.astype(np.float32))
    assert shape_output(binary, FilSettings()).dtype == np.float32
    assert [output_columns(k, proba) for k in (1, 2, 3)] == [2, 2, 3]
    assert [output_columns(k, labels) for k in (1, 3)] == [1, 1]
    assert [output_columns(k, FilSettings()) for k in (1, 3)] == [1, 3]


def test_xgboost_format_sniffing() -> None:
    assert xgboost_format(b' \n{"learner": {}}') == "json"
    assert xgboost_format(b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner{") == "ubj"
    assert xgboost_format(b"binf\x00\x00\x00\x3f") is None
