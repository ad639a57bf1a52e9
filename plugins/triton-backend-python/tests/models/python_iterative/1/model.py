"""Request rescheduling, non-decoupled (Triton's README): a request is rescheduled until it has
executed IN times, then answered: RUNS is how many times it executed, STARTS how many of those
carried the START flag (the scheduler sets it on the first only)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.runs = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            runs, starts = self.runs.get(request.request_id(), (0, 0))
            runs += 1
            starts += bool(request.flags() & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START)
            wanted = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            if runs < wanted:
                self.runs[request.request_id()] = (runs, starts)
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                responses.append(None)  # a rescheduled request gets no response now
                continue
            self.runs.pop(request.request_id(), None)
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("RUNS", np.array([runs], np.int32)),
                        pb_utils.Tensor("STARTS", np.array([starts], np.int32)),
                    ]
                )
            )
        return responses
