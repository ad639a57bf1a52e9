"""Reports the interpreter it runs with and whether the server's packages are visible to it."""

import importlib.util
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        sees_kernel = importlib.util.find_spec("kernel") is not None
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("EXECUTABLE", np.array([sys.executable], np.object_)),
                        pb_utils.Tensor("SEES_KERNEL", np.array([sees_kernel], np.bool_)),
                        pb_utils.Tensor("OUTPUT0", data * 2),
                    ]
                )
            )
        return responses
