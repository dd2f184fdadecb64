"""queue_sleep: sleeps INPUT seconds (one request at a time), then OUTPUT = INPUT."""

import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            seconds = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            time.sleep(float(seconds.sum()))
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", seconds)]))
        return responses
