"""identity: OUTPUT_<T> = INPUT_<T> for each input present in the request (all inputs are optional).

BF16 has no numpy dtype, so its tensors go through DLPack untouched; the rest go through numpy.
(No echo of request parameters, unlike the KServe and MLServer identity models: the python backend of Triton 2.51
cannot set response parameters.)
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
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
