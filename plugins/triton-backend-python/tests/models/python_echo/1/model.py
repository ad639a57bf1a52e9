"""Echoes what the model sees: REQUEST is JSON of the request's metadata, ARGS the initialize
args (model_config parsed), OUTPUT0 the input, modified in place (inputs are writable)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = dict(args)
        self.args["model_config"] = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            data += 1
            seen = {
                "request_id": request.request_id(),
                "correlation_id": request.correlation_id(),
                "flags": request.flags(),
                "timeout": request.timeout(),
                "parameters": json.loads(request.parameters()),
                "requested_output_names": sorted(request.requested_output_names()),
                "inputs": [t.name() for t in request.inputs()],
                "is_cancelled": request.is_cancelled(),
            }
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("REQUEST", np.array([json.dumps(seen)], np.object_)),
                        pb_utils.Tensor("ARGS", np.array([json.dumps(self.args)], np.object_)),
                        pb_utils.Tensor("OUTPUT0", data),
                    ],
                    parameters={"echoed": True},
                )
            )
        return responses
