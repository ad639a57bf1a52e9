"""A model whose initialize fails: the model is unavailable with the reason, nothing else is."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        raise pb_utils.TritonModelException("cannot load the weights")

    def execute(self, requests):
        return []
