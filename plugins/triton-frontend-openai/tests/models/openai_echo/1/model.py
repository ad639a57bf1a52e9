"""A token-streaming text model for the OpenAI frontend's tests: no weights, no download.

It "generates" the prompt's words again, one word per token (" word" after the first), cycling
through them until ``max_tokens`` (default 16) or a stop sequence, as an LLM model written for
Triton's Python backend streams tokens. With ``temperature`` > 0 the words come in a shuffled
order, the same for the same ``seed``. Request parameters it reads (OpenAI's fields, which the
frontend hands over): ``max_tokens``, ``stop`` (JSON list), ``temperature``, ``seed``, and four
of the tests' own: ``delay_ms`` (sleep before each token), ``cancel_marker`` (a file it writes
"cancelled" into when it sees ``is_cancelled()``), ``ignore_stop`` (leave stop sequences to
the frontend) and ``fail_after`` (answer an error after that many tokens).

Decoupled (the default config), each request runs in its own thread so streams interleave; with
``decoupled: False`` the whole text is one response. The last response reports
``prompt_tokens`` and ``completion_tokens`` as response parameters.
"""

import json
import random
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _generate(prompt, params):
    """Yield the tokens for ``prompt``; stops early when ``stop`` matched."""
    words = prompt.split()
    if not words:
        return
    max_tokens = int(params.get("max_tokens", 16))
    temperature = float(params.get("temperature", 0.0))
    if temperature > 0:
        random.Random(params.get("seed")).shuffle(words)
    stops = [] if params.get("ignore_stop") else json.loads(params.get("stop", "[]"))
    text = ""
    for index in range(max_tokens):
        token = words[index % len(words)]
        token = token if index == 0 else " " + token
        text += token
        yield token
        if any(s in text for s in stops):
            return


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.threads = []
        self.lock = threading.Lock()

    def execute(self, requests):
        if not self.decoupled:
            return [self._whole(request) for request in requests]
        for request in requests:
            # The sender is taken here, before execute returns (as Triton's repeat example
            # does): a request execute leaves without one is answered with an error.
            sender = request.get_response_sender()
            thread = threading.Thread(target=self._stream, args=(request, sender), daemon=True)
            with self.lock:
                self.threads = [t for t in self.threads if t.is_alive()] + [thread]
            thread.start()
        return None

    @staticmethod
    def _read(request):
        prompt = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy()
        params = json.loads(request.parameters())
        return prompt.reshape(-1)[0].decode(), params

    @staticmethod
    def _response(outputs, prompt, count):
        """A response reporting the usage counts as parameters (Triton 2.51's Python backend
        has no response parameters: there the frontend counts)."""
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": count}
        try:
            return pb_utils.InferenceResponse(outputs, parameters=usage)
        except TypeError:
            return pb_utils.InferenceResponse(outputs)

    def _whole(self, request):
        prompt, params = self._read(request)
        tokens = list(_generate(prompt, params))
        out = pb_utils.Tensor("text_output", np.array(["".join(tokens).encode()], np.object_))
        return self._response([out], prompt, len(tokens))

    def _stream(self, request, sender):
        prompt, params = self._read(request)
        delay = float(params.get("delay_ms", 0)) / 1000
        count = 0
        fail_after = params.get("fail_after")
        for token in _generate(prompt, params):
            if count == fail_after:
                error = pb_utils.TritonError(f"failed on purpose after {count} tokens")
                final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                sender.send(pb_utils.InferenceResponse(error=error), flags=final)
                return
            if delay:
                time.sleep(delay)
            if request.is_cancelled():
                marker = params.get("cancel_marker")
                if marker:
                    with open(marker, "w") as f:
                        f.write("cancelled")
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            out = pb_utils.Tensor("text_output", np.array([token.encode()], np.object_))
            sender.send(pb_utils.InferenceResponse([out]))
            count += 1
        final = self._response([], prompt, count)
        sender.send(final, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(timeout=5)
