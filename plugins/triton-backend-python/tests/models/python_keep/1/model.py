"""Keeps a view of every input it gets and writes into each input in place.

OUTPUT0 is the input plus one (written into the input array itself); KEPT lists, for every
input kept so far (the same view, no copy), its smallest and largest element. Large inputs
reach a model in its own process as views of shared memory: what a model keeps must stay
as it was after its request is answered, and what it writes must reach no other request.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.kept = []

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            data += 1
            self.kept.append(data[:, 1:])  # a view of a view
            kept = np.array([[k.min(), k.max()] for k in self.kept], dtype=np.float32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", data),
                        pb_utils.Tensor("KEPT", kept.reshape(1, -1)),
                    ]
                )
            )
        return responses
