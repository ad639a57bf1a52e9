"""Module globals belong to one instance: each instance records itself in a module-level list
and answers how many instances that list holds (1 when instances do not share the module)."""

import numpy as np
import triton_python_backend_utils as pb_utils

INSTANCES = []


class TritonPythonModel:
    def initialize(self, args):
        INSTANCES.append(args["model_instance_name"])
        self.name = args["model_instance_name"]

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("SEEN", np.array([len(INSTANCES)], dtype=np.int32)),
                    pb_utils.Tensor("INSTANCE", np.array([self.name.encode()], dtype=np.object_)),
                ]
            )
            for _ in requests
        ]
