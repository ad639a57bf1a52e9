"""A decoupled model that streams IN, then waits (up to 20 s) for its request to be cancelled:
it then sends the final flag alone; never cancelled, it sends -1 and the final flag."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _out(value):
    return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([value], np.int32))])


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            sender.send(_out(int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])))
            for _ in range(400):
                if request.is_cancelled():
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                    break
                time.sleep(0.05)
            else:
                sender.send(_out(-1), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
