"""Calls python_echo (which adds 1 to its input in place) with its own array: OUTPUT0 is the
echo's answer, MINE the caller's array afterwards (unchanged, as across Triton's processes)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            mine = np.array(pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy())
            echo = pb_utils.InferenceRequest(
                model_name="python_echo",
                inputs=[pb_utils.Tensor("INPUT0", mine)],
                requested_output_names=["OUTPUT0"],
            ).exec()
            if echo.has_error():
                raise pb_utils.TritonModelException(echo.error().message())
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.get_output_tensor_by_name(echo, "OUTPUT0"),
                        pb_utils.Tensor("MINE", mine),
                    ]
                )
            )
        return responses
