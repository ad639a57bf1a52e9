"""No silent ignores: a model-config field this server does not implement is reported by name,
by ``kernel check`` and at load (a warning, or a failed load where answers would be wrong)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from kernel._check_command import check
from kernel._config_text import parse_model_config
from kernel._unhonoured import unhonoured_fields
from kernel.testing import run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}

BATCH_INPUT = (
    'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_FP32'
    ' source_input: "INPUT0" } ]'
)
METRIC_TAGS = 'metric_tags { key: "team" value: "vision" }'


def _fields(text: str) -> list[tuple[str, str]]:
    return [(u.field, u.severity) for u in unhonoured_fields(parse_model_config(text, "cfg"))]


def test_a_plain_config_has_nothing_to_report(kt_config: Callable[..., str]) -> None:
    assert _fields(kt_config("identity", extra="dynamic_batching { }")) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (BATCH_INPUT, [("batch_input", "error")]),
        (
            'batch_output [ { target_name: "OUTPUT0" kind: BATCH_SCATTER_WITH_INPUT_SHAPE'
            ' source_input: "INPUT0" } ]',
            [("batch_output", "error")],
        ),
        ("sequence_batching { iterative_sequence: true }", []),  # honoured (rescheduling)
        (
            'model_repository_agents { agents [ { name: "checksum" } ] }',
            [("model_repository_agents", "error")],
        ),
        (METRIC_TAGS, [("metric_tags", "warning")]),
        ('cc_model_filenames { key: "7.5" value: "m.plan" }', [("cc_model_filenames", "warning")]),
        (
            "optimization { cuda { graphs: true } eager_batching: true }",
            [("optimization.cuda", "warning"), ("optimization.eager_batching", "warning")],
        ),
        (
            'instance_group [ { kind: KIND_CPU host_policy: "numa0" } ]',
            [("instance_group.host_policy", "warning")],
        ),
    ],
)
def test_each_unimplemented_field_is_named(
    kt_config: Callable[..., str], extra: str, expected: list[tuple[str, str]]
) -> None:
    assert _fields(kt_config("identity", extra=extra)) == expected


def test_shape_tensors_are_errors(kt_config: Callable[..., str]) -> None:
    text = kt_config("identity").replace(
        '{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }',
        '{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] is_shape_tensor: true }',
    )
    assert _fields(text) == [("input.is_shape_tensor", "error")]


async def test_load_warns_or_fails_by_name(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_model(repo, "tagged", kt_config("identity", extra=METRIC_TAGS))
    add_model(repo, "batched", kt_config("identity", extra=BATCH_INPUT))
    with caplog.at_level(logging.WARNING, logger="kernel.manager"):
        async with run_server(repo, **NO_ENDPOINTS) as srv:
            assert srv.server.is_model_ready("tagged")
            assert not srv.server.is_model_ready("batched")
            [row] = [r for r in srv.server.repository_index() if r.name == "batched"]
            assert "field 'batch_input' is not implemented" in row.reason
    assert "model 'tagged'" in caplog.text
    assert "field 'metric_tags' is not implemented" in caplog.text


def test_kernel_check_reports_warnings_and_errors(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_model(repo, "tagged", kt_config("identity", extra=METRIC_TAGS))
    assert check([repo]) == 0
    out = capsys.readouterr()
    assert "warning: tagged:" in out.err and "'metric_tags'" in out.err
    assert "checked 1 models: 0 problem(s), 1 warning(s)" in out.out
    add_model(repo, "batched", kt_config("identity", extra=BATCH_INPUT))
    assert check([repo]) == 1
    out = capsys.readouterr()
    assert "error: batched:" in out.err and "'batch_input'" in out.err
