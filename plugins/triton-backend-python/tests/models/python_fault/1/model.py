"""A model that fails the way real models fail, on request (restart tests).

INPUT0[0] chooses: -1 ``os._exit(3)``, -2 a segfault in C (``ctypes.string_at(0)``), -3 hang
(for a SIGKILL from outside), otherwise echo INPUT0 after INPUT0[1] seconds (when given).
Every response carries the process id. ``initialize`` exits with code 4 while a file
``crash_on_start`` exists in the model folder (a model that keeps crashing on start).
"""

import ctypes
import os
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        if (Path(args["model_repository"]) / "crash_on_start").exists():
            os._exit(4)

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if data[0] == -1:
                os._exit(3)
            if data[0] == -2:
                ctypes.string_at(0)
            if data[0] == -3:
                time.sleep(600)
            if len(data) > 1:
                time.sleep(float(data[1]))
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", data),
                        pb_utils.Tensor("PID", np.array([os.getpid()], np.int64)),
                    ]
                )
            )
        return responses
