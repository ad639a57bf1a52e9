"""A model with Triton's ``is_ready()`` hook: what it answers is set by a request's STATE:
``true``, ``false``, ``raise`` (it raises), ``non_boolean`` (returns a string), ``async_true``
(returns a coroutine answering True) or ``slow`` (answers True after 7 s: too late)."""

import asyncio
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.state = "true"

    def is_ready(self):
        state = self.state
        if state == "raise":
            raise pb_utils.TritonModelException("not today")
        if state == "non_boolean":
            return "yes"
        if state == "slow":
            time.sleep(7)
            return True
        if state == "async_true":
            return self._later()
        return state == "true"

    async def _later(self):
        await asyncio.sleep(0.01)
        return True

    def execute(self, requests):
        responses = []
        for request in requests:
            state = pb_utils.get_input_tensor_by_name(request, "STATE").as_numpy()[0]
            self.state = state.decode()
            out = pb_utils.Tensor("STATE_OUT", np.array([state], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
