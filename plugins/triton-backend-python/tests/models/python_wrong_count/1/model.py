"""An execute returning the wrong number of responses (two per request)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            response = pb_utils.InferenceResponse(output_tensors=[data])
            responses.extend([response, response])
        return responses
