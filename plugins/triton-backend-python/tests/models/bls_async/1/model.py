"""Triton's asynchronous BLS example: several calls in flight at once with async_exec.

Two calls to python_add_sub run concurrently (OUTPUT0 from the first, OUTPUT1 from the second);
a third call streams from the decoupled python_repeat, and COUNT is how many responses carried
data.
"""

import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    # You must add the Python 'async' keyword to the beginning of `execute`
    # function if you want to use `async_exec` function.
    async def execute(self, requests):
        responses = []
        for request in requests:
            inputs = [
                pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                pb_utils.get_input_tensor_by_name(request, "INPUT1"),
            ]
            first = pb_utils.InferenceRequest(
                model_name="python_add_sub",
                requested_output_names=["OUTPUT0"],
                inputs=inputs,
            )
            second = pb_utils.InferenceRequest(
                model_name="python_add_sub",
                requested_output_names=["OUTPUT1"],
                inputs=inputs,
            )
            stream = pb_utils.InferenceRequest(
                model_name="python_repeat",
                requested_output_names=["OUT"],
                inputs=[pb_utils.Tensor("IN", np.array([1, 2, 3], dtype=np.int32))],
            )
            # Wait for all of the inference requests to complete.
            infer_responses = await asyncio.gather(
                first.async_exec(), second.async_exec(), stream.async_exec(decoupled=True)
            )
            for infer_response in infer_responses[:2]:
                if infer_response.has_error():
                    raise pb_utils.TritonModelException(infer_response.error().message())
            count = 0
            for infer_response in infer_responses[2]:
                if infer_response.has_error():
                    raise pb_utils.TritonModelException(infer_response.error().message())
                # For decoupled models the last response may be empty.
                if len(infer_response.output_tensors()) > 0:
                    count += 1

            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.get_output_tensor_by_name(infer_responses[0], "OUTPUT0"),
                        pb_utils.get_output_tensor_by_name(infer_responses[1], "OUTPUT1"),
                        pb_utils.Tensor("COUNT", np.array([count], dtype=np.int32)),
                    ]
                )
            )
        return responses
