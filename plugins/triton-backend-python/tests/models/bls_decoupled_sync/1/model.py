"""Triton's BLS-with-decoupled-models example: a blocking exec(decoupled=True) returns an
iterator over the called model's responses. SUM adds up the OUT values python_repeat streamed.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            infer_request = pb_utils.InferenceRequest(
                model_name="python_repeat",
                requested_output_names=["OUT"],
                inputs=[pb_utils.get_input_tensor_by_name(request, "IN")],
            )
            total = 0
            count = 0
            for infer_response in infer_request.exec(decoupled=True):
                if infer_response.has_error():
                    raise pb_utils.TritonModelException(infer_response.error().message())
                # For some models, it is possible that the last response is empty
                if len(infer_response.output_tensors()) > 0:
                    out = pb_utils.get_output_tensor_by_name(infer_response, "OUT")
                    total += int(out.as_numpy()[0])
                    count += 1
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("SUM", np.array([total], dtype=np.int32)),
                        pb_utils.Tensor("COUNT", np.array([count], dtype=np.int32)),
                    ]
                )
            )
        return responses
