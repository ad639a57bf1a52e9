"""A decoupled model whose process dies in the middle of a stream (after one response)."""

import os
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            threading.Thread(target=self.stream, args=(sender,), daemon=True).start()
        return None

    def stream(self, sender):
        out = pb_utils.Tensor("OUT", np.array([1], np.int32))
        sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
        os._exit(5)
