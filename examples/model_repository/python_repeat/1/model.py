"""Triton's decoupled "repeat" example: one response per element of IN, sent from a thread.

For each request the model starts a thread that sends, for every element of IN, a response
holding that element (OUT) and its index (IDX), waiting DELAY[i] milliseconds before each
(when DELAY is given), then closes the stream with TRITONSERVER_RESPONSE_COMPLETE_FINAL.
"""

import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = model_config = json.loads(args["model_config"])

        using_decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
        if not using_decoupled:
            raise pb_utils.TritonModelException(
                """the model `{}` can generate any number of responses per request,
                enable decoupled transaction policy in model configuration to
                serve this model""".format(args["model_name"])
            )

        out_config = pb_utils.get_output_config_by_name(model_config, "OUT")
        self.out_dtype = pb_utils.triton_string_to_numpy(out_config["data_type"])
        idx_config = pb_utils.get_output_config_by_name(model_config, "IDX")
        self.idx_dtype = pb_utils.triton_string_to_numpy(idx_config["data_type"])

        self.inflight_thread_count = 0
        self.inflight_thread_count_lck = threading.Lock()

    def execute(self, requests):
        # Decoupled models return None from execute: the responses go through the senders.
        for request in requests:
            self.process_request(request)
        return None

    def process_request(self, request):
        in_input = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
        delay = pb_utils.get_input_tensor_by_name(request, "DELAY")
        delays = delay.as_numpy() if delay is not None else np.zeros_like(in_input)
        if in_input.shape != delays.shape:
            request.get_response_sender().send(
                pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(
                        f"expected IN and DELAY shape to match, got {list(in_input.shape)}"
                        f" and {list(delays.shape)}.",
                        pb_utils.TritonError.INVALID_ARG,
                    )
                ),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
            return

        thread = threading.Thread(
            target=self.response_thread,
            args=(request.get_response_sender(), np.copy(in_input), np.copy(delays)),
        )
        thread.daemon = True
        with self.inflight_thread_count_lck:
            self.inflight_thread_count += 1
        thread.start()

    def response_thread(self, response_sender, in_input, delays):
        for idx in range(in_input.size):
            time.sleep(delays[idx] / 1000)
            out_output = pb_utils.Tensor("OUT", np.array([in_input[idx]], self.out_dtype))
            idx_output = pb_utils.Tensor("IDX", np.array([idx], self.idx_dtype))
            response = pb_utils.InferenceResponse(output_tensors=[out_output, idx_output])
            response_sender.send(response)

        # The final flag closes the stream; it needs no response of its own.
        response_sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

        with self.inflight_thread_count_lck:
            self.inflight_thread_count -= 1

    def finalize(self):
        # Wait (bounded) for the response threads to finish.
        for _ in range(500):
            with self.inflight_thread_count_lck:
                if self.inflight_thread_count == 0:
                    break
            time.sleep(0.01)
