"""sequence_sum: OUTPUT = running sum of INPUT within a sequence; ENDED echoes the END control."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.total = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            if pb_utils.get_input_tensor_by_name(request, "START").as_numpy().item():
                self.total = 0
            self.total += int(pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy().item())
            ended = pb_utils.get_input_tensor_by_name(request, "END").as_numpy().astype(np.int32).reshape(1)
            out = np.array([self.total], dtype=np.int32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("OUTPUT", out), pb_utils.Tensor("ENDED", ended)]
                )
            )
        return responses
