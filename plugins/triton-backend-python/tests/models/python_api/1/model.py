"""Corners of Triton's Python-backend API, one per MODE; TEXT says what happened.

``model_dir``: ``pb_utils.get_model_dir()``. ``bls_bytes``: a BLS call to the model named by the
NAME input, passed as ``bytes`` (as read from a BYTES tensor). ``unload_deps``: unloads NAME
with ``unload_dependents=True``. ``sender_one`` / ``sender_one_final``: the one response through
the response sender (final flag apart or with it). ``sender_zero``: the final flag alone (raises
Triton's error). ``sender_two``: a second response (refused; TEXT of the first says so).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


def _text(value):
    return pb_utils.Tensor("TEXT", np.array([value.encode()], dtype=np.object_))


class TritonPythonModel:
    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            name = pb_utils.get_input_tensor_by_name(request, "NAME")
            name = None if name is None else name.as_numpy()[0]  # bytes, as Triton gives it
            sender = request.get_response_sender()
            if mode == "model_dir":
                text = json.dumps(
                    [pb_utils.get_model_dir(), self.args["model_repository"], __file__]
                )
            elif mode == "bls_bytes":
                a = np.array([1, 2, 3, 4], dtype=np.float32)
                call = pb_utils.InferenceRequest(
                    model_name=name,
                    inputs=[pb_utils.Tensor("INPUT0", a), pb_utils.Tensor("INPUT1", a)],
                    requested_output_names=[b"OUTPUT0"],
                )
                answer = call.exec()
                if answer.has_error():
                    text = "error: " + answer.error().message()
                else:
                    out = pb_utils.get_output_tensor_by_name(answer, "OUTPUT0").as_numpy()
                    text = json.dumps(out.tolist())
            elif mode == "reschedule":  # not an iterative sequence model: the request fails
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                responses.append(None)
                continue
            elif mode == "params":
                parameters = {"b": True, "i": 7, "s": "x", "f": 1.5}
                responses.append(pb_utils.InferenceResponse([_text("p")], parameters=parameters))
                continue
            elif mode == "sender_params":
                sender.send(
                    pb_utils.InferenceResponse([_text("p")], parameters={"via": "sender"}),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                responses.append(None)
                continue
            elif mode == "bls_params":  # what a BLS caller reads: the JSON of the parameters
                call = pb_utils.InferenceRequest(
                    model_name="python_iterative_decoupled",  # not itself: one instance
                    inputs=[pb_utils.Tensor("IN", np.array([1], dtype=np.int32))],
                    requested_output_names=["OUT"],
                )
                text = call.exec().parameters()
            elif mode == "ready":  # pb_utils.is_model_ready: readiness hooks included
                text = str(pb_utils.is_model_ready(name))
            elif mode == "unload_deps":
                pb_utils.unload_model(name, unload_dependents=True)
                text = "unloaded"
            elif mode == "sender_one":
                sender.send(pb_utils.InferenceResponse([_text("one")]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                responses.append(None)
                continue
            elif mode == "sender_one_final":
                sender.send(
                    pb_utils.InferenceResponse([_text("one final")]),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                responses.append(None)
                continue
            elif mode == "sender_zero":
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)  # raises
                responses.append(None)
                continue
            elif mode == "sender_two":
                first = np.array([b"one"], dtype=np.object_)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", first)]))
                try:
                    sender.send(pb_utils.InferenceResponse([_text("two")]))
                except pb_utils.TritonModelException as exc:
                    first[0] = ("refused: " + exc.message()).encode()  # still held: not sent
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                responses.append(None)
                continue
            else:
                text = "unknown mode " + mode
            responses.append(pb_utils.InferenceResponse([_text(text)]))
        return responses
