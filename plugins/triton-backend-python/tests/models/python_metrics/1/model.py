"""Triton's custom-metrics example: a counter of requests, a gauge of the last input size, a
histogram of input sums; OUTPUT0 echoes INPUT0. The metrics show on the metrics endpoint."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.requests_family = pb_utils.MetricFamily(
            name="requests_seen_total",
            description="Requests the model has seen",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.size_family = pb_utils.MetricFamily(
            name="last_input_size",
            description="Elements in the last input",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.sum_family = pb_utils.MetricFamily(
            name="input_sum",
            description="Sum of each input",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.requests = self.requests_family.Metric(labels=labels)
        self.size = self.size_family.Metric(labels=labels)
        self.sums = self.sum_family.Metric(labels=labels, buckets=[1.0, 10.0, 100.0])

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            self.requests.increment(1)
            self.size.set(data.size)
            self.sums.observe(float(data.sum()))
            pb_utils.Logger.log_info(f"requests so far: {self.requests.value()}")
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", np.array([self.requests.value()], np.float32))
                    ]
                )
            )
        return responses
