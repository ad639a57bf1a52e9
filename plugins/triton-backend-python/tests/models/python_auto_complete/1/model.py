"""Triton's auto-complete example: no config.pbtxt; the model declares its own inputs,
outputs and batching in ``auto_complete_config`` (then computes add/sub)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        inputs = [
            {"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
            {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]},
        ]
        outputs = [
            {"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]},
            {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [4]},
        ]

        # Demonstrate the usage of `as_dict`, `add_input`, `add_output`,
        # `set_max_batch_size`, and `set_dynamic_batching` functions.
        config = auto_complete_model_config.as_dict()
        input_names = []
        output_names = []
        for item in config["input"]:
            input_names.append(item["name"])
        for item in config["output"]:
            output_names.append(item["name"])

        for item in inputs:
            if item["name"] not in input_names:
                auto_complete_model_config.add_input(item)
        for item in outputs:
            if item["name"] not in output_names:
                auto_complete_model_config.add_output(item)

        auto_complete_model_config.set_max_batch_size(8)
        auto_complete_model_config.set_dynamic_batching()

        return auto_complete_model_config

    def execute(self, requests):
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", in_0 + in_1),
                        pb_utils.Tensor("OUTPUT1", in_0 - in_1),
                    ]
                )
            )
        return responses
