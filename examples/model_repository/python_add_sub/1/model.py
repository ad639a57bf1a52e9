"""Triton's Python-backend add/sub example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.

Written exactly as a model for Triton's Python backend is written; it runs unchanged.
"""

import json

# triton_python_backend_utils holds the utilities Python models use: tensors, requests,
# responses, errors, and the helpers to read the model configuration.
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Every Python model must use the class name "TritonPythonModel"."""

    def initialize(self, args):
        """Called once when the model loads; ``args`` holds strings, among them the model
        configuration as JSON."""
        self.model_config = model_config = json.loads(args["model_config"])

        output0_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT0")
        output1_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT1")

        # Convert Triton types to numpy types
        self.output0_dtype = pb_utils.triton_string_to_numpy(output0_config["data_type"])
        self.output1_dtype = pb_utils.triton_string_to_numpy(output1_config["data_type"])

    def execute(self, requests):
        """Receives a list of pb_utils.InferenceRequest and returns one
        pb_utils.InferenceResponse per request, in order."""
        output0_dtype = self.output0_dtype
        output1_dtype = self.output1_dtype

        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1")

            out_0, out_1 = (
                in_0.as_numpy() + in_1.as_numpy(),
                in_0.as_numpy() - in_1.as_numpy(),
            )

            out_tensor_0 = pb_utils.Tensor("OUTPUT0", out_0.astype(output0_dtype))
            out_tensor_1 = pb_utils.Tensor("OUTPUT1", out_1.astype(output1_dtype))

            inference_response = pb_utils.InferenceResponse(
                output_tensors=[out_tensor_0, out_tensor_1]
            )
            responses.append(inference_response)

        return responses

    def finalize(self):
        """Called once when the model unloads."""
        print("Cleaning up...")
