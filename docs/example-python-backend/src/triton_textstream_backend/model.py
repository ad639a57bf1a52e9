"""The ``textstream`` backend: one ``TritonPythonModel`` class that serves every model naming it.

Written exactly as a Triton Python-based backend's ``model.py`` (Triton would find it as
``<backend-directory>/textstream/model.py``); here a pip distribution registers the class in the
``kernel.backends`` entry-point group instead, and the kernel's python backend serves it, in a
process per instance (default) or in the server process (``EXECUTION_MODE: in_process``).

Each model keeps its own files in its version folder, where Triton passes them:
``args["model_repository"]`` is the model's folder and ``args["model_version"]`` its version,
so ``<model_repository>/<model_version>/style.json`` is this model's style.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from ._words import styled, words


class TritonPythonModel:
    """Streams TEXT back as one TOKEN response per word, then the final flag (decoupled)."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                f"model '{args['model_name']}': the textstream backend streams its answers:"
                " set model_transaction_policy { decoupled: true }"
            )
        path = os.path.join(args["model_repository"], args["model_version"], "style.json")
        with open(path, encoding="utf-8") as file:
            self.style: dict[str, str] = json.load(file)
        self.model_name = args["model_name"]

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                for item in text.reshape(-1):
                    value = item.decode("utf-8") if isinstance(item, bytes) else str(item)
                    for word in words(value):
                        if request.is_cancelled():
                            break
                        token = np.array([styled(word, self.style).encode()], dtype=np.object_)
                        sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("TOKEN", token)]))
            except Exception as exc:
                error = pb_utils.TritonError(f"{self.model_name}: {type(exc).__name__}: {exc}")
                sender.send(pb_utils.InferenceResponse(error=error))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
