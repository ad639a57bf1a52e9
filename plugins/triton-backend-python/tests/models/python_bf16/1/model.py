"""Doubles a BF16 tensor the way Triton's documentation handles BF16: through DLPack (with
torch when it is installed, as Triton's docs do; else through a DLPack round trip of its own)."""

import triton_python_backend_utils as pb_utils

try:
    import torch
except ImportError:
    torch = None


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "IN")
            if torch is not None:
                doubled = torch.from_dlpack(tensor.to_dlpack()) * 2
                assert doubled.dtype == torch.bfloat16
                out = pb_utils.Tensor.from_dlpack("OUT", torch.utils.dlpack.to_dlpack(doubled))
            else:
                again = pb_utils.Tensor.from_dlpack("IN", tensor.to_dlpack())
                out = pb_utils.Tensor.from_dlpack("OUT", again.to_dlpack())
                out.as_numpy()[:] *= 2
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
