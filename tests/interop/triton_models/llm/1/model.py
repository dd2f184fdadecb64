"""llm (decoupled): streams the words of text_input (each with the space after it), as inferkit's llm_model does.

Request parameters (a generate payload's keys that are not inputs): max_tokens, delay (seconds per word),
fail_after (an error response after that many words). A cancelled request (the client went away) stops at once.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _words(request):
    raw = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    parts = text.split()
    words = [word + " " for word in parts[:-1]] + parts[-1:]
    params = json.loads(request.parameters() or "{}")
    return words[: int(params.get("max_tokens", len(words)))], params


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            words, params = _words(request)
            delay = float(params.get("delay", 0.0))
            fail_after = params.get("fail_after")
            for index, word in enumerate(words):
                if request.is_cancelled():
                    break
                if fail_after is not None and index >= int(fail_after):
                    error = pb_utils.TritonError(f"planned failure after {index} tokens")
                    sender.send(pb_utils.InferenceResponse(error=error))
                    break
                if delay:
                    time.sleep(delay)
                output = pb_utils.Tensor("text_output", np.array([word.encode("utf-8")], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse(output_tensors=[output]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
