"""Reports what a model process looks like from inside, and runs its own unit tests in
``execute`` the way Triton's QA models do (``unittest.main("model", exit=False)``)."""

import os
import signal
import sys
import unittest

import numpy as np
import triton_python_backend_utils as pb_utils


class ModelTest(unittest.TestCase):
    def test_numpy_works(self):
        self.assertEqual(int(np.arange(4).sum()), 6)


def _text(values):
    return np.array([str(v).encode() for v in values], np.object_)


class TritonPythonModel:
    def execute(self, requests):
        test = unittest.main("model", exit=False)
        handlers = [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)]
        responses = []
        for _ in requests:
            outputs = {
                "ARGV": _text(sys.argv),
                "CWD": _text([os.getcwd()]),
                "NAME": _text([__name__]),
                "SIGNALS": _text(["ignored" if h == signal.SIG_IGN else repr(h) for h in handlers]),
                "ENV": _text([os.environ.get("TRITON_KERNEL_TEST_MARKER", "")]),
                "UNITTEST": np.array(
                    [test.result.wasSuccessful() and test.result.testsRun == 1], np.bool_
                ),
            }
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()])
            )
        return responses
