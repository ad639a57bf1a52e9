"""Finding a model's ``.onnx`` file and opening ONNX Runtime sessions on the right device.

Which providers a session really uses is read back from the session (``get_providers()``):
onnxruntime-gpu lists CUDA and TensorRT as *available* even where no GPU or CUDA library is,
and a session asked for CUDA then quietly falls back to the CPU. A KIND_GPU instance refuses
that fallback with a load error instead of running on the CPU unannounced.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

from kernel import KernelError, ModelContext, Status
from triton_backend_onnx._settings import SessionSettings

DEFAULT_MODEL_FILENAME = "model.onnx"

_ORT_WARNING = 2
_ORT_FATAL = 4


def model_path(context: ModelContext) -> Path:
    """The ``.onnx`` file to load: ``default_model_filename`` (else ``model.onnx``) in the
    version folder; when that is a directory, the ``model.onnx`` inside it (Triton's layout
    for a model with external data files).

    :raises KernelError: ``UNAVAILABLE`` when the file does not exist.
    """
    path = context.model_file(DEFAULT_MODEL_FILENAME)
    if path.is_dir():
        path = path / DEFAULT_MODEL_FILENAME
    if not path.is_file():
        raise KernelError(Status.UNAVAILABLE, f"unable to find '{path}' for model '{context.name}'")
    return path


def _create(path: Path, options: ort.SessionOptions, providers: list[Any], model: str) -> Any:
    try:
        # A path, not bytes: ONNX Runtime resolves external data files relative to it.
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        raise KernelError(
            Status.INVALID_ARG,
            f"unable to load model '{model}': ONNX Runtime cannot create a session from"
            f" '{path}': {exc}",
        ) from exc


def inspection_session(path: Path, model: str) -> Any:
    """A cheap CPU session for reading the model's signature (no graph optimization)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return _create(path, options, ["CPUExecutionProvider"], model)


def open_session(
    path: Path,
    settings: SessionSettings,
    *,
    model: str,
    instance: str,
    kind: str,
    device_id: int,
    log_lock: threading.Lock,
) -> Any:
    """A session for one instance, on the CPU or (KIND_GPU) on CUDA/TensorRT ``device_id``.

    ``log_lock`` serializes GPU session creation, during which ONNX Runtime's process-wide
    logger is silenced: a failed CUDA provider would otherwise print error lines that this
    function reports as one clear load error instead.

    :raises KernelError: ``UNAVAILABLE`` when a KIND_GPU session did not get the GPU provider
        it asked for; ``INVALID_ARG`` when ONNX Runtime refuses the model.
    """
    providers = settings.providers(kind, device_id)
    options = settings.session_options()
    if kind != "KIND_GPU":
        return _create(path, options, providers, model)
    with log_lock:
        ort.set_default_logger_severity(_ORT_FATAL)
        try:
            session = _create(path, options, providers, model)
        finally:
            ort.set_default_logger_severity(_ORT_WARNING)
    wanted = ["CUDAExecutionProvider"]
    if settings.tensorrt_options is not None:
        wanted.insert(0, "TensorrtExecutionProvider")
    actual = list(session.get_providers())
    missing = [name for name in wanted if name not in actual]
    if missing:
        raise KernelError(
            Status.UNAVAILABLE,
            f"unable to load model '{model}': instance '{instance}' is KIND_GPU on device"
            f" {device_id}, but ONNX Runtime could not use {' and '.join(missing)} (the session"
            f" got {actual}); a usable NVIDIA GPU and the CUDA libraries onnxruntime-gpu needs"
            " are required (pip install 'onnxruntime-gpu[cuda,cudnn]'), or use KIND_CPU",
        )
    return session
