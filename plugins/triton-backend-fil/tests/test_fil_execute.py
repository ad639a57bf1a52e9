"""How a batch runs: one prediction over the concatenated rows, split back per request; a lone
FP32 request's array reaches the framework uncopied; ``cpu_nthread`` reaches the framework."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from kernel import InferenceRequest, InferenceResponse, ModelConfig
from kernel.config import parse_model_config


class RecordingPredictor:
    """Wraps a predictor and records the arrays each ``predict`` was given."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.library = predictor.library
        self.num_feature = predictor.num_feature
        self.calls: list[npt.NDArray[np.float32]] = []

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        self.calls.append(features)
        return np.asarray(self.predictor.predict(features))


def _config(kit: Any, name: str, model_type: str, **options: Any) -> ModelConfig:
    config = parse_model_config(kit.fil_config(model_type=model_type, **options), name)
    config.name = name
    return config


def _request(rows: npt.NDArray[np.float32]) -> InferenceRequest:
    request = InferenceRequest("forest", {"input__0": rows})
    request.batch_size = len(rows)  # the kernel sets it when it accepts the request
    return request


def _answer(request: InferenceRequest) -> InferenceResponse:
    return asyncio.run(request.final_response())


def _instance(kit: Any, trained: Any, tmp_path: Path, **options: Any) -> tuple[Any, Any]:
    config = _config(kit, "forest", "xgboost_json", **options)
    content = kit.model_bytes(trained.xgb_regressor, "xgboost_json")
    instance = kit.unit_instance(tmp_path / "forest", config, {"xgboost.json": content})
    recorder = RecordingPredictor(instance.predictor)
    instance.predictor = recorder
    return instance, recorder


def test_batch_is_predicted_once_and_split_per_request(
    kit: Any, trained: Any, tmp_path: Path
) -> None:
    instance, recorder = _instance(kit, trained, tmp_path)
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((n, 4)).astype(np.float32) for n in (1, 3, 2)]
    requests = [_request(p) for p in parts]
    instance.execute(requests)
    assert len(recorder.calls) == 1 and recorder.calls[0].shape == (6, 4)
    for part, request in zip(parts, requests, strict=True):
        got = _answer(request).outputs["output__0"]
        want = trained.xgb_regressor.predict(part).reshape(-1, 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_lone_contiguous_fp32_request_is_not_copied(
    kit: Any, trained: Any, tmp_path: Path
) -> None:
    instance, recorder = _instance(kit, trained, tmp_path)
    rows = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    rows.flags.writeable = False  # inputs may be read-only views of the wire bytes
    request = _request(rows)
    instance.execute([request])
    assert recorder.calls[0] is rows
    assert _answer(request).outputs["output__0"].shape == (5, 1)
    strided = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)[:, ::2]
    instance.execute([_request(strided)])
    assert recorder.calls[1].flags.c_contiguous
    np.testing.assert_array_equal(recorder.calls[1], strided)


def test_without_batching_each_request_runs_alone(kit: Any, trained: Any, tmp_path: Path) -> None:
    config = _config(kit, "forest", "lightgbm", columns=3, max_batch_size=0)
    config.input[0].dims = [-1, 4]
    config.output[0].dims = [-1, 3]
    content = kit.model_bytes(trained.lgbm_classifier, "lightgbm")
    instance = kit.unit_instance(tmp_path / "forest", config, {"model.txt": content})
    recorder = RecordingPredictor(instance.predictor)
    instance.predictor = recorder
    rng = np.random.default_rng(4)
    parts = [rng.standard_normal((n, 4)).astype(np.float32) for n in (2, 3)]
    requests = [InferenceRequest("forest", {"input__0": p}) for p in parts]
    instance.execute(requests)
    assert [c.shape for c in recorder.calls] == [(2, 4), (3, 4)]
    for part, request in zip(parts, requests, strict=True):
        got = _answer(request).outputs["output__0"]
        want = trained.lgbm_classifier.booster_.predict(part)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_type", ["xgboost_json", "lightgbm", "treelite_checkpoint"])
def test_cpu_nthread_reaches_the_framework(
    kit: Any, trained: Any, tmp_path: Path, model_type: str
) -> None:
    estimator = trained.lgbm_classifier if model_type == "lightgbm" else trained.xgb_regressor
    columns = 3 if model_type == "lightgbm" else 1
    config = _config(kit, "forest", model_type, columns=columns, parameters={"cpu_nthread": "2"})
    file = kit.file_names[model_type]
    content = kit.model_bytes(estimator, model_type)
    predictor = kit.unit_instance(tmp_path / "forest", config, {file: content}).predictor
    if model_type == "xgboost_json":
        generic = json.loads(predictor.booster.save_config())["learner"]["generic_param"]
        assert generic["nthread"] == "2"
    elif model_type == "lightgbm":
        assert predictor.options == {"num_threads": 2}
    else:
        assert predictor.threads == 2


def test_xgboost_softmax_model_answers_probabilities_and_labels(
    kit: Any, trained: Any, tmp_path: Path
) -> None:
    """``multi:softmax`` predicts labels only: it is served from its probabilities, as FIL."""
    import xgboost

    data = trained.data
    train = xgboost.DMatrix(data.train, label=data.classes)
    params = {"objective": "multi:softmax", "num_class": 3, "max_depth": 2, "nthread": 1}
    booster = xgboost.train(params, train, num_boost_round=3)
    content = bytes(booster.save_raw("json"))
    labels = booster.predict(xgboost.DMatrix(data.query))
    for columns, parameters in ((3, {"predict_proba": "true"}), (1, {"output_class": "true"})):
        config = _config(kit, "softmax", "xgboost_json", columns=columns, parameters=parameters)
        folder = tmp_path / f"softmax_{columns}"
        instance = kit.unit_instance(folder, config, {"xgboost.json": content})
        request = _request(data.query)
        instance.execute([request])
        got = _answer(request).outputs["output__0"]
        if columns == 3:
            np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
            np.testing.assert_array_equal(got.argmax(axis=1), labels)
        else:
            np.testing.assert_array_equal(got[:, 0], labels)
