"""Streams from python_wait_cancel with ``await async_exec(decoupled=True)``: takes the first
response as soon as it is there, cancels the call, and reports what the stream then held.
SEEN lists each response: its OUT value, or "error: <message>", or "empty"."""

import numpy as np
import triton_python_backend_utils as pb_utils


def _describe(response):
    if response.has_error():
        return "error: " + response.error().message()
    out = pb_utils.get_output_tensor_by_name(response, "OUT")
    return "empty" if out is None else str(int(out.as_numpy()[0]))


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            call = pb_utils.InferenceRequest(
                model_name="python_wait_cancel",
                inputs=[pb_utils.get_input_tensor_by_name(request, "IN")],
                requested_output_names=["OUT"],
            )
            stream = await call.async_exec(decoupled=True)
            seen = [_describe(next(stream))]
            stream.cancel()
            seen.extend(_describe(response) for response in stream)
            text = np.array([s.encode() for s in seen], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SEEN", text)]))
        return responses
