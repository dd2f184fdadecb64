"""fail: every request gets an error response whose message the tests look for."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(error=pb_utils.TritonError("interop: this model always fails")) for _ in requests
        ]
