"""String tensors: UPPER holds each TEXT item upper-cased, LENGTH its length in bytes.

BYTES tensors reach the model as numpy object arrays of ``bytes``; outputs may hold ``bytes``
or ``str`` items.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            upper = np.array(
                [item.decode("utf-8").upper() for item in text.reshape(-1)], dtype=np.object_
            ).reshape(text.shape)
            length = np.array([len(item) for item in text.reshape(-1)], dtype=np.int32).reshape(
                text.shape
            )
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("UPPER", upper),
                        pb_utils.Tensor("LENGTH", length),
                    ]
                )
            )
        return responses
