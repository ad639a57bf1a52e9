"""Triton's README example of a decoupled model using request rescheduling: IN is the number of
responses; each execution sends one (OUT: how many remain) and reschedules the request until the
last one, sent with the final flag. Each response carries parameters (Triton 24.11+)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.reset_flag = True
        self.remaining_response = 0

    def execute(self, requests):
        for request in requests:
            in_input = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()

            if self.reset_flag:
                self.remaining_response = in_input[0]
                self.reset_flag = False

            response_sender = request.get_response_sender()

            self.remaining_response -= 1

            out_output = pb_utils.Tensor("OUT", np.array([self.remaining_response], np.int32))
            response = pb_utils.InferenceResponse(
                output_tensors=[out_output],
                parameters={"remaining": int(self.remaining_response), "last": False},
            )

            if self.remaining_response <= 0:
                response_sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                self.reset_flag = True
            else:
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                response_sender.send(response)

        return None
