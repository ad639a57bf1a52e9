"""Model control from a model (Triton 23.07+): ACTION "load", "unload" or "ready" on MODEL;
READY answers whether MODEL is ready afterwards."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            action = pb_utils.get_input_tensor_by_name(request, "ACTION").as_numpy()[0].decode()
            model = pb_utils.get_input_tensor_by_name(request, "MODEL").as_numpy()[0].decode()
            try:
                if action == "load":
                    pb_utils.load_model(model_name=model)
                elif action == "unload":
                    pb_utils.unload_model(model_name=model)
            except pb_utils.TritonModelException as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(exc.message()))
                )
                continue
            ready = pb_utils.is_model_ready(model_name=model)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("READY", np.array([ready], dtype=np.bool_))]
                )
            )
        return responses
