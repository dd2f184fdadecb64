"""identity: OUTPUT_<T> = INPUT_<T> for each input present in the request (all inputs are optional).

BF16 has no numpy dtype, so its tensors go through DLPack untouched; the rest go through numpy.
Request parameters whose names start with "echo_" come back as response parameters (same on KServe and MLServer),
so the tests can see that parameters reached the model.
"""

import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.pairs = [(i["name"], "OUTPUT" + i["name"][len("INPUT") :], i["data_type"]) for i in config["input"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = []
            for in_name, out_name, data_type in self.pairs:
                tensor = pb_utils.get_input_tensor_by_name(request, in_name)
                if tensor is None:
                    continue
                if data_type == "TYPE_BF16":
                    outputs.append(pb_utils.Tensor.from_dlpack(out_name, tensor.to_dlpack()))
                else:
                    outputs.append(pb_utils.Tensor(out_name, tensor.as_numpy()))
            echo = {k: v for k, v in json.loads(request.parameters() or "{}").items() if k.startswith("echo_")}
            if echo:
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs, parameters=echo))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
