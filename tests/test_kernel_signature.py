"""kernel.signature: auto-complete and the load-time check over small in-memory signatures."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

import pytest

import kernel.signature
from kernel import KernelError, ModelConfig, Status
from kernel._config_text import parse_model_config
from kernel.config import ModelInput, ModelOutput, ModelTensorReshape
from kernel.signature import (
    DEFAULT_MAX_BATCH_SIZE,
    ModelSignature,
    SignatureRules,
    TensorSignature,
    auto_complete,
    check_config,
    check_dims,
    check_tensor,
    find_tensor,
    format_shape,
    implicit_inputs,
    is_complete,
    output_reshape,
)


def _config(text: str = "") -> ModelConfig:
    return parse_model_config(f'name: "m"\n{text}', "m/config.pbtxt")


def _fp32(name: str, *dims: int) -> TensorSignature:
    return TensorSignature(name, "TYPE_FP32", dims, framework_type="float32")


def _tensors(
    tensors: Sequence[ModelInput] | Sequence[ModelOutput],
) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (t.data_type.name, list(t.dims)) for t in tensors}


# A batching model: every tensor's first dim is dynamic.
BATCHING = ModelSignature(
    inputs=[_fp32("X", -1, 4), _fp32("Y", -1, -1, 3)],
    outputs=[_fp32("Z", -1, 2)],
)
# The same model with fixed shapes: it cannot batch.
FIXED = ModelSignature(inputs=[_fp32("X", 2, 4)], outputs=[_fp32("Z", 2, 2)])
# The batching model with an input it may be given (an ONNX overridable initializer).
WITH_BIAS = ModelSignature(
    inputs=BATCHING.inputs, outputs=BATCHING.outputs, optional_inputs=[_fp32("bias", -1, 4)]
)
SEQUENCE = """
sequence_batching {
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }
  ]
  state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
}
"""


def test_public_surface() -> None:
    assert sorted(kernel.signature.__all__) == [
        "DEFAULT_MAX_BATCH_SIZE",
        "ModelSignature",
        "SignatureRules",
        "TensorKind",
        "TensorSignature",
        "auto_complete",
        "check_config",
        "check_dims",
        "check_tensor",
        "find_tensor",
        "format_shape",
        "implicit_inputs",
        "is_complete",
        "output_reshape",
    ]
    for name in kernel.signature.__all__:
        public = getattr(kernel.signature, name)
        if inspect.isclass(public) or inspect.isfunction(public):
            assert public.__doc__, name


def test_format_shape_prints_as_triton() -> None:
    assert format_shape([-1, 16]) == "[-1,16]"
    assert format_shape(()) == "[]"
    assert format_shape(None) == "[?]"


def test_is_complete_needs_inputs_or_batch_inputs_and_outputs() -> None:
    output = 'output [ { name: "Z" data_type: TYPE_FP32 dims: [ 2 ] } ]'
    batch_input = (
        'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_FP32 } ]'
    )
    assert not is_complete(_config())
    assert not is_complete(_config(output))
    assert is_complete(
        _config(f'input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }} ]\n{output}')
    )
    assert is_complete(_config(f"{batch_input}\n{output}"))


def test_implicit_inputs_are_the_sequence_controls_then_states() -> None:
    assert implicit_inputs(_config()) == []
    assert implicit_inputs(_config(SEQUENCE)) == ["START", "STATE_IN"]


def test_signature_finds_tensors_by_any_name() -> None:
    port = TensorSignature("x:0", "TYPE_FP32", (-1, 4), aliases=frozenset({"x", "input"}))
    bias = _fp32("bias", 4)
    signature = ModelSignature(inputs=[port], outputs=[_fp32("Z", -1)], optional_inputs=[bias])
    assert port.names == {"x:0", "x", "input"}
    assert signature.find("input", "input") is port
    assert signature.find("input", "bias") is bias  # optional inputs answer too
    assert signature.find("output", "bias") is None
    assert signature.find("output", "Z") is signature.outputs[0]
    assert [t.name for t in signature.tensors("input")] == ["x:0", "bias"]


def test_batchable_means_every_first_dim_is_dynamic() -> None:
    assert BATCHING.batchable()
    assert not FIXED.batchable()
    scalar = ModelSignature(inputs=[_fp32("X", -1)], outputs=[_fp32("S")])
    assert not scalar.batchable()
    unknown = ModelSignature(inputs=[TensorSignature("X", "TYPE_FP32", None)], outputs=[])
    assert not unknown.batchable()


def test_auto_complete_fills_a_batching_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kernel.signature"):
        config = auto_complete(_config(), BATCHING)
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert config.dynamic_batching is not None
    assert _tensors(config.input) == {"X": ("TYPE_FP32", [4]), "Y": ("TYPE_FP32", [-1, 3])}
    assert _tensors(config.output) == {"Z": ("TYPE_FP32", [2])}
    assert "autofilled max_batch_size to 4 for model 'm'" in caplog.text


def test_auto_complete_warns_on_the_given_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.signature.model")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        auto_complete(_config(), BATCHING, default_max_batch_size=16, logger=logger)
    assert [r.name for r in caplog.records] == [logger.name]
    assert "autofilled max_batch_size to 16" in caplog.text


@pytest.mark.parametrize(
    ("text", "default", "max_batch_size", "dynamic"),
    [
        ("", 0, 0, False),  # a default of 0: the model is served without batching
        ("", 1, 1, False),  # batches of one gain nothing from a dynamic batcher
        ("max_batch_size: 8", 4, 8, True),  # the user's value stays
        ("max_batch_size: 8\nsequence_batching { }", 4, 8, False),  # a scheduler is given
    ],
)
def test_auto_complete_batching_settings(
    text: str, default: int, max_batch_size: int, dynamic: bool
) -> None:
    config = auto_complete(_config(text), BATCHING, default_max_batch_size=default)
    assert config.max_batch_size == max_batch_size
    assert (config.dynamic_batching is not None) is dynamic
    batch_dims = [4] if max_batch_size else [-1, 4]
    assert _tensors(config.input)["X"] == ("TYPE_FP32", batch_dims)


def test_auto_complete_never_replaces_what_the_user_wrote() -> None:
    complete = _config(
        'input [ { name: "A" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "B" data_type: TYPE_INT32 dims: [ 1 ] } ]'
    )
    untyped = ModelSignature(inputs=[TensorSignature("X", None, (4,))], outputs=[])
    assert auto_complete(complete, untyped) is complete  # the file is not even looked at
    assert complete.max_batch_size == 0 and complete.dynamic_batching is None

    partial = auto_complete(
        _config('max_batch_size: 2\noutput [ { name: "Z" data_type: TYPE_FP16 dims: [ 2 ] } ]'),
        BATCHING,
    )
    assert partial.max_batch_size == 2
    assert _tensors(partial.output) == {"Z": ("TYPE_FP16", [2])}
    assert list(_tensors(partial.input)) == ["X", "Y"]


def test_auto_complete_fills_required_inputs_only() -> None:
    signature = ModelSignature(
        inputs=[_fp32("X", 4)], outputs=[_fp32("Z", 4)], optional_inputs=[_fp32("bias", 4)]
    )
    assert list(_tensors(auto_complete(_config(), signature).input)) == ["X"]


def test_auto_complete_refuses_max_batch_size_for_a_model_that_cannot_batch() -> None:
    with pytest.raises(KernelError) as caught:
        auto_complete(_config("max_batch_size: 8"), FIXED)
    assert caught.value.status is Status.INVALID_ARG
    assert caught.value.message == (
        "autofill failed for model 'm': model does not support batching while non-zero"
        " max_batch_size is specified"
    )


def test_auto_complete_may_only_warn_when_batching_evidence_is_a_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kernel.signature"):
        config = auto_complete(
            _config("max_batch_size: 8"), FIXED, rules=SignatureRules(warn_unbatchable=True)
        )
    assert "does not name a batch dimension" in caplog.text
    assert config.max_batch_size == 8 and config.dynamic_batching is None
    assert _tensors(config.input) == {"X": ("TYPE_FP32", [4])}  # the first dim is the batch


def test_auto_complete_takes_the_backends_own_batching_answer() -> None:
    config = auto_complete(_config(), BATCHING, can_batch=False)
    assert config.max_batch_size == 0
    assert _tensors(config.input)["X"] == ("TYPE_FP32", [-1, 4])
    config = auto_complete(_config(), FIXED, can_batch=True, default_max_batch_size=2)
    assert config.max_batch_size == 2 and config.dynamic_batching is not None


def test_auto_complete_writes_scalars_and_batch_only_tensors_as_triton() -> None:
    batch_only = ModelSignature(inputs=[_fp32("X", -1)], outputs=[_fp32("Y", -1)])
    config = auto_complete(_config(), batch_only)
    assert list(config.input[0].dims) == [1]
    assert config.input[0].reshape == ModelTensorReshape(shape=[])

    scalar = ModelSignature(inputs=[_fp32("S")], outputs=[_fp32("T")])
    config = auto_complete(_config(), scalar)
    assert list(config.input[0].dims) == [1] and config.input[0].reshape is None
    config = auto_complete(_config(), scalar, rules=SignatureRules(reshape_scalars=True))
    assert list(config.input[0].dims) == [1]
    assert config.input[0].reshape == ModelTensorReshape(shape=[])


def test_auto_complete_refuses_tensors_it_cannot_describe() -> None:
    odd = ModelSignature(
        inputs=[TensorSignature("C", None, (4,), framework_type="complex64")], outputs=[]
    )
    with pytest.raises(KernelError, match="tensor 'C' has the type complex64, which"):
        auto_complete(_config(), odd)
    unranked = ModelSignature(inputs=[TensorSignature("R", "TYPE_FP32", None)], outputs=[])
    with pytest.raises(KernelError, match="tensor 'R' has a dynamic rank"):
        auto_complete(_config(), unranked)


COMPLETE = """
max_batch_size: 4
input [
  { name: "X" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "Y" data_type: TYPE_FP32 dims: [ 8, 3 ] }
]
output [ { name: "Z" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""


def test_check_config_accepts_a_config_that_agrees() -> None:
    check_config(_config(COMPLETE), BATCHING)


def test_check_config_accepts_implicit_inputs_and_aliases() -> None:
    signature = ModelSignature(
        inputs=[
            TensorSignature("x:0", "TYPE_FP32", (-1, 4), aliases=frozenset({"X"})),
            TensorSignature("START", "TYPE_INT32", (-1, 1)),
            TensorSignature("STATE_IN", "TYPE_FP32", (-1, 1)),
        ],
        outputs=[_fp32("Z", -1, 2)],
    )
    config = _config(
        """
max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Z" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""
        + SEQUENCE
    )
    check_config(config, signature)


X_INT32 = '"X" data_type: TYPE_INT32'


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            ',\n  { name: "Y" data_type: TYPE_FP32 dims: [ 8, 3 ] }',
            "",
            "configuration expects 1 inputs, model provides 2: model input(s) ['Y'] are missing"
            " from the configuration",
        ),
        (
            "input [",
            'input [\n  { name: "W" data_type: TYPE_FP32 dims: [ 4 ] },',
            "configuration expects input 'W', but the model has no such input (model inputs:"
            " ['X', 'Y', 'bias'])",
        ),
        (
            '"Z"',
            '"Q"',
            "configuration expects output 'Q', but the model has no such output (model"
            " outputs: ['Z'])",
        ),
        (
            '"X" data_type: TYPE_FP32',
            X_INT32,
            "configuration expects datatype TYPE_INT32 for input 'X', model provides TYPE_FP32",
        ),
    ],
)
def test_check_config_refuses_a_config_that_contradicts_the_model(
    old: str, new: str, message: str
) -> None:
    with pytest.raises(KernelError) as caught:
        check_config(_config(COMPLETE.replace(old, new)), WITH_BIAS)
    assert caught.value.status is Status.INVALID_ARG
    assert caught.value.message == f"unable to load model 'm', {message}"


def test_check_config_accepts_a_declared_optional_input() -> None:
    bias = '{ name: "bias" data_type: TYPE_FP32 dims: [ 4 ] },'
    check_config(_config(COMPLETE.replace("input [", f"input [\n  {bias}")), WITH_BIAS)


def test_check_config_leaves_datatypes_to_a_backend_that_converts() -> None:
    config = _config(COMPLETE.replace('"X" data_type: TYPE_FP32', X_INT32))
    check_config(config, BATCHING, SignatureRules(check_datatypes=False))


def test_check_tensor_names_the_frameworks_type_when_triton_has_none() -> None:
    config = _config(COMPLETE)
    odd = TensorSignature("X", None, (-1, 4), framework_type="tensor(complex64)")
    with pytest.raises(KernelError, match="TYPE_FP32 for input 'X', model provides tensor"):
        check_tensor(config, "input", config.input[0], odd)


def test_check_tensor_compares_the_reshape_when_there_is_one() -> None:
    config = _config(
        """
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4, 4 ] reshape { shape: [ 16 ] } } ]
output [ { name: "Z" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""
    )
    check_tensor(config, "input", config.input[0], _fp32("X", 16))
    with pytest.raises(KernelError, match=r"model expects shape \[4,4\]"):
        check_tensor(config, "input", config.input[0], _fp32("X", 4, 4))


def test_find_tensor_names_the_models_tensors() -> None:
    assert find_tensor(_config(), BATCHING, "output", "Z") is BATCHING.outputs[0]
    with pytest.raises(KernelError, match=r"no such output \(model outputs: \['Z'\]\)"):
        find_tensor(_config(), BATCHING, "output", "W")


@pytest.mark.parametrize(
    ("model_dims", "config_dims", "batching", "rules"),
    [
        (None, [3, 3], True, SignatureRules()),  # an unknown rank: nothing to contradict
        ((-1, 4), [4], True, SignatureRules()),
        ((-1, -1), [7], True, SignatureRules()),  # a dynamic dim takes anything
        ((2, 4), [2, -1], False, SignatureRules()),  # a config -1 matches a fixed dim
        ((), [1], False, SignatureRules()),  # a scalar, carried as [1]
        ((), [], False, SignatureRules()),  # ... or as an empty reshape
        ((), [1], True, SignatureRules(batched_scalars=True)),
        ((8, 4), [4], True, SignatureRules(fixed_batch_dim=True)),  # set to max_batch_size
    ],
)
def test_check_dims_accepts(
    model_dims: tuple[int, ...] | None,
    config_dims: list[int],
    batching: bool,
    rules: SignatureRules,
) -> None:
    check_dims("m", "input", "X", model_dims, config_dims, batching=batching, rules=rules)


@pytest.mark.parametrize(
    ("model_dims", "config_dims", "batching", "rules", "message"),
    [
        (
            (-1, 16),
            [8],
            True,
            SignatureRules(),
            "input 'X': the model expects shape [-1,16] but the model configuration specifies"
            " shape [-1,8] (max_batch_size > 0 adds the leading batch dimension)",
        ),
        (
            (-1, 16),
            [16, 1],
            True,
            SignatureRules(),
            "input 'X': the model expects shape [-1,16] but the model configuration specifies"
            " shape [-1,16,1] (max_batch_size > 0 adds the leading batch dimension)",
        ),
        (
            (2, 16),
            [16],
            False,
            SignatureRules(),
            "input 'X': the model expects shape [2,16] but the model configuration specifies"
            " shape [16]",
        ),
        (
            (2, 16),
            [-1, 16],
            False,
            SignatureRules(exact_fixed_dims=True),
            "input 'X': the model expects shape [2,16] but the model configuration specifies"
            " shape [-1,16]",
        ),
        (
            (8, 4),
            [4],
            True,
            SignatureRules(),
            "input 'X': for the model to support batching the shape should have at least 1"
            " dimension and the first dimension must be -1; but the model expects shape [8,4]"
            " and the model configuration specifies [-1,4] (max_batch_size > 0 adds the"
            " leading batch dimension)",
        ),
        (
            (),
            [1],
            True,
            SignatureRules(fixed_batch_dim=True),
            "input 'X': for the model to support batching the shape should have at least 1"
            " dimension; but the model expects shape [] and the model configuration specifies"
            " [-1,1] (max_batch_size > 0 adds the leading batch dimension)",
        ),
        (
            (),
            [3],
            False,
            SignatureRules(),
            "scalar tensor 'X' should only provide 1 in the model configuration; the model"
            " expects shape [] but the model configuration specifies [3]",
        ),
    ],
)
def test_check_dims_refuses(
    model_dims: tuple[int, ...],
    config_dims: list[int],
    batching: bool,
    rules: SignatureRules,
    message: str,
) -> None:
    with pytest.raises(KernelError) as caught:
        check_dims("m", "input", "X", model_dims, config_dims, batching=batching, rules=rules)
    assert caught.value.status is Status.INVALID_ARG
    assert caught.value.message == f"unable to load model 'm', {message}"


def test_output_reshape_gives_the_configs_dims_when_due() -> None:
    reshaped = ModelOutput(name="Z", dims=[4, 4], reshape=ModelTensorReshape(shape=[16]))
    plain = ModelOutput(name="Z", dims=[16])
    scalar = ModelOutput(name="S", dims=[1])
    assert output_reshape(reshaped, _fp32("Z", -1, 16)) == (4, 4)
    assert output_reshape(plain, _fp32("Z", -1, 16)) is None
    assert output_reshape(scalar, _fp32("S")) == (1,)  # a scalar goes back as [1]
    assert output_reshape(scalar, None) is None
    ambiguous = ModelOutput(name="Z", dims=[-1, -1], reshape=ModelTensorReshape(shape=[-1]))
    assert output_reshape(ambiguous, _fp32("Z", -1)) is None
