"""An execute that raises: every request of the batch gets the error; per-request errors go
through TritonError. A negative first element raises; zero answers a TritonError."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if data[0] < 0:
                raise ValueError("negative input is not allowed")
            if data[0] == 0:
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(
                            "zero is not a valid input", pb_utils.TritonError.INVALID_ARG
                        )
                    )
                )
                continue
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)])
            )
        return responses
