"""The request validator's plan (the checks decided once per model version) accepts exactly what
the full checks accept, with the same batch size, and leaves every refusal to them (same
message)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import InferenceRequest, KernelError
from kernel._config_text import parse_model_config
from kernel._validation import RequestValidator

UNBATCHED = """
name: "m"
input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "B" data_type: TYPE_INT64 dims: [ 2, 3 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""

BATCHED = """
name: "m"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "B" data_type: TYPE_INT64 dims: [ 2, 3 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""

NO_PLAN = {
    "variable dims": 'name: "m" input [ { name: "A" data_type: TYPE_FP32 dims: [ -1 ] } ]',
    "optional": 'name: "m" input [ { name: "A" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]',
    "reshape": 'name: "m" input [ { name: "A" data_type: TYPE_FP32 dims: [ 2 ]'
    " reshape: { shape: [ 1, 2 ] } } ]",
    "bytes": 'name: "m" input [ { name: "A" data_type: TYPE_STRING dims: [ 1 ] } ]',
}


def _outcome(check: Any, request: InferenceRequest) -> tuple[str, object]:
    try:
        return "ok", check(request)
    except KernelError as exc:
        return "error", exc.message


_names = st.sampled_from(["A", "B", "C"])
_dtypes = st.sampled_from([np.float32, np.float32, np.int64, np.int64, np.float64, np.dtype(">f4")])
_shapes = st.one_of(
    st.sampled_from([(4,), (2, 3), (3, 4), (3, 2, 3), (0, 4), (0, 2, 3), (9, 4), (1, 2, 3)]),
    st.lists(st.integers(0, 9), max_size=4).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(
    config=st.sampled_from([UNBATCHED, BATCHED]),
    inputs=st.dictionaries(_names, st.tuples(_dtypes, _shapes), max_size=3),
    outputs=st.lists(st.sampled_from(["OUT", "X"]), max_size=2),
)
def test_the_plan_agrees_with_the_full_checks(
    config: str, inputs: dict[str, tuple[Any, tuple[int, ...]]], outputs: list[str]
) -> None:
    validator = RequestValidator(parse_model_config(config, "test"))
    assert validator._plan is not None

    def request() -> InferenceRequest:
        arrays = {name: np.zeros(shape, dtype) for name, (dtype, shape) in inputs.items()}
        return InferenceRequest("m", arrays, requested_output_names=outputs)

    expected = _outcome(validator._validate, request())
    if any(name not in validator.outputs for name in outputs):
        expected = _outcome(validator.validate, request())
        assert expected[0] == "error"
        assert "unexpected inference output" in str(expected[1])
        return
    assert _outcome(validator.validate, request()) == expected


@pytest.mark.parametrize(("config", "batch"), [(UNBATCHED, 1), (BATCHED, 3)])
def test_a_well_formed_request_takes_the_plan(config: str, batch: int) -> None:
    validator = RequestValidator(parse_model_config(config, "test"))
    lead = (batch,) if "max_batch_size" in config else ()
    arrays = {
        "A": np.zeros((*lead, 4), np.float32),
        "B": np.zeros((*lead, 2, 3), np.int64),
    }
    assert validator._plan is not None
    assert validator._fast(validator._plan, arrays) == batch
    assert validator.validate(InferenceRequest("m", arrays)) == batch


@pytest.mark.parametrize("case", sorted(NO_PLAN))
def test_configs_with_something_to_decide_per_request_have_no_plan(case: str) -> None:
    assert RequestValidator(parse_model_config(NO_PLAN[case], "test"))._plan is None
