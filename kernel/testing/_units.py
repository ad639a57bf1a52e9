"""A backend's model and instance made the way the kernel makes them, without a server."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy.typing as npt

from kernel._backend import InstanceContext, Model, ModelContext, ModelInstance
from kernel._inference import InferenceRequest, InferenceResponse
from kernel._proto.inference import ModelConfig

__all__ = [
    "final_response",
    "model_context",
    "run_instance",
    "unit_instance",
    "unit_model",
    "unit_request",
]

ModelT = TypeVar("ModelT", bound=Model)
T = TypeVar("T")


def _settle(result: Awaitable[T] | T) -> T:
    """The value of a hook that may be sync or async (an async one runs to completion here)."""
    if inspect.isawaitable(result):
        return asyncio.run(_wait(cast(Awaitable[T], result)))
    return result


async def _wait(awaitable: Awaitable[T]) -> T:
    return await awaitable


def model_context(
    folder: Path,
    config: ModelConfig,
    *,
    version: int = 1,
    backend_config: dict[str, str] | None = None,
    logger: logging.Logger | None = None,
) -> ModelContext:
    """The context of version ``version`` of the model in ``folder``, as the kernel fills it.

    There is no server behind it: ``context.server`` is ``None``, so the model must make no
    in-process calls (BLS, model control, metric families).
    """
    return ModelContext(
        name=config.name,
        version=version,
        path=folder / str(version),
        model_dir=folder,
        config=config,
        backend_config=dict(backend_config or {}),
        logger=logger or logging.getLogger(f"kernel.testing.{config.name}"),
        server=None,  # type: ignore[arg-type]  # see above: no server, no in-process calls
    )


def unit_model(
    create_model: Callable[[ModelContext], ModelT],
    folder: Path,
    config: ModelConfig,
    *,
    files: Mapping[str, bytes] | None = None,
    auto_complete: bool = True,
    backend_config: dict[str, str] | None = None,
    logger: logging.Logger | None = None,
) -> ModelT:
    """An initialized model of version 1 in ``folder``, made as the kernel makes it.

    ``create_model`` is the backend's factory (``backend.create_model``, or a model class bound
    to its backend); ``files`` maps paths inside ``folder`` (``"1/model.onnx"``) to contents
    written first. Auto-complete runs unless ``auto_complete`` is false, and its config replaces
    ``context.config`` before ``initialize``. Hooks may be sync or async. ``backend_config`` and
    ``logger`` are handed to :func:`model_context`.
    """
    for relative, content in (files or {}).items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    context = model_context(folder, config, backend_config=backend_config, logger=logger)
    model = create_model(context)
    if auto_complete:
        context.config = _settle(model.auto_complete_config(config))
    _settle(model.initialize())
    return model


def unit_instance(
    model: Model, *, kind: str = "KIND_CPU", index: int = 0, device_id: int = 0
) -> ModelInstance:
    """An initialized instance ``<model name>_<index>`` of ``model``, as the kernel makes it;
    it logs to the child ``instance`` of the model's logger."""
    instance = model.create_instance(
        InstanceContext(
            name=f"{model.context.name}_{index}",
            kind=kind,
            device_id=device_id,
            model=model.context,
            logger=logging.getLogger(f"{model.context.logger.name}.instance"),
        )
    )
    _settle(instance.initialize())
    return instance


def unit_request(
    inputs: Mapping[str, npt.NDArray[Any]],
    *,
    rows: int = 0,
    outputs: tuple[str, ...] = (),
    model: str = "m",
) -> InferenceRequest:
    """A request as the kernel hands it to ``execute``: ``rows`` is its batch size (0 for a
    model without batching), ``outputs`` the outputs it asks for (none: all)."""
    request = InferenceRequest(model, inputs, requested_output_names=outputs)
    request.batch_size = rows  # the kernel sets it when it accepts the request
    return request


def final_response(request: InferenceRequest) -> InferenceResponse:
    """The final response of ``request``, once ``execute`` has answered it."""
    return asyncio.run(request.final_response())


def run_instance(
    instance: ModelInstance, inputs: Mapping[str, npt.NDArray[Any]], *, rows: int = 0
) -> dict[str, npt.NDArray[Any]]:
    """One request through ``instance.execute``: its outputs, or its error raised."""
    request = unit_request(inputs, rows=rows)
    _settle(instance.execute([request]))
    response = final_response(request)
    if response.error is not None:
        raise response.error
    return response.outputs
