"""Standard models for tests and demos: identity, add/sub, decoupled repeat, failing, slow, sequence, a stand-in
LLM for Triton's generate extension, and a small real classifier (softmax regression trained with numpy on the
iris measurements at start-up).

Owns: the model callables and their declarations. Must not import: aiohttp, grpc.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, Sequence

import numpy as np

from inferkit.testing._engine import interruptible_sleep
from inferkit.testing._iris import CLASSES, FEATURES, load_iris
from inferkit.testing._model import Model, TensorSpec

__all__ = [
    "identity_model",
    "add_sub_model",
    "repeat_model",
    "failing_stream_model",
    "failing_model",
    "slow_model",
    "sequence_model",
    "llm_model",
    "iris_model",
    "train_iris_classifier",
    "demo_models",
    "standard_models",
]


def identity_model(
    name: str = "identity", datatype: str = "FP32", shape: Sequence[int] = (-1,), versions: Sequence[str] = ("1",)
) -> Model:
    """``OUTPUT0 = INPUT0`` for any datatype (BYTES and BF16 included)."""

    def identity(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"OUTPUT0": inputs["INPUT0"]}

    return Model(
        name,
        identity,
        versions=versions,
        inputs=[TensorSpec("INPUT0", datatype, shape)],
        outputs=[TensorSpec("OUTPUT0", datatype, shape)],
    )


def add_sub_model(name: str = "add_sub", datatype: str = "INT32", dims: int = 16) -> Model:
    """Triton's classic "simple" model: ``OUTPUT0 = INPUT0 + INPUT1``, ``OUTPUT1 = INPUT0 - INPUT1``."""

    def add_sub(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}

    shape = [-1, dims]
    return Model(
        name,
        add_sub,
        inputs=[TensorSpec("INPUT0", datatype, shape), TensorSpec("INPUT1", datatype, shape)],
        outputs=[TensorSpec("OUTPUT0", datatype, shape), TensorSpec("OUTPUT1", datatype, shape)],
    )


def repeat_model(name: str = "repeat", datatype: str = "INT32") -> Model:
    """A decoupled model: for input ``IN`` it sends one response per element (``OUT`` = ``[IN[i]]``,
    ``IDX`` = ``[i]``). Parameter ``repeat_count`` sends that many responses instead (cycling over ``IN``);
    parameter ``delay`` waits that many seconds before each response."""

    def repeat(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        values = inputs["IN"].reshape(-1)
        count = int(parameters.get("repeat_count", values.size))
        delay = float(parameters.get("delay", 0.0))
        for i in range(count):
            if delay and interruptible_sleep(delay):
                return
            yield {"OUT": values[i % values.size : i % values.size + 1], "IDX": np.array([i], dtype=np.uint32)}

    return Model(
        name,
        repeat,
        inputs=[TensorSpec("IN", datatype, [-1])],
        outputs=[TensorSpec("OUT", datatype, [1]), TensorSpec("IDX", "UINT32", [1])],
        decoupled=True,
    )


def failing_stream_model(name: str = "fail_mid_stream", fail_after: int = 2) -> Model:
    """A decoupled model that sends ``fail_after`` responses (``OUT`` = ``IN``), then raises."""

    def fail_mid_stream(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        for _ in range(int(parameters.get("fail_after", fail_after))):
            yield {"OUT": inputs["IN"]}
        raise RuntimeError(f"planned failure after {fail_after} responses")

    return Model(
        name,
        fail_mid_stream,
        inputs=[TensorSpec("IN", "INT32", [-1])],
        outputs=[TensorSpec("OUT", "INT32", [-1])],
        decoupled=True,
    )


def llm_model(name: str = "llm", delay: float = 0.0, decoupled: bool = True) -> Model:
    """A stand-in LLM for ``generate`` / ``generate_stream``: it streams the words of its input back.

    Input ``text_input`` (BYTES ``[1]``); output ``text_output`` (BYTES ``[1]``): one response per word (the word
    and the space after it), like the tokens of an LLM. Request parameters (top-level keys of a generate payload
    that are not inputs land there, as on Triton): ``max_tokens`` (most words sent), ``delay`` (seconds before each
    word, default ``delay``: the time per token), ``fail_after`` (raise after that many words: an error event).
    With ``decoupled=False`` it answers once with the whole text (``max_tokens`` words of it).

    Example (test your own streaming code against it)::

        with ReferenceServer([llm_model(delay=0.01)]) as server:
            client = InferenceRESTClient(server.http_url)
            print("".join(e["text_output"] for e in client.generate_stream("llm", {"text_input": "a b c"})))
    """

    def words(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> list[str]:
        raw = inputs["text_input"].reshape(-1)[0]
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        parts = text.split()
        out = [word + " " for word in parts[:-1]] + parts[-1:]
        return out[: int(parameters.get("max_tokens", len(out)))]

    def answer(item: str) -> dict[str, np.ndarray]:
        return {"text_output": np.array([item.encode("utf-8")], dtype=object)}

    def stream(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        pause = float(parameters.get("delay", delay))
        fail_after = parameters.get("fail_after")
        for i, word in enumerate(words(inputs, parameters)):
            if fail_after is not None and i >= int(fail_after):
                raise RuntimeError(f"planned failure after {i} tokens")
            if pause and interruptible_sleep(pause):
                return
            yield answer(word)

    def once(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        return answer("".join(words(inputs, parameters)))

    return Model(
        name,
        stream if decoupled else once,
        inputs=[TensorSpec("text_input", "BYTES", [1])],
        outputs=[TensorSpec("text_output", "BYTES", [1])],
        decoupled=decoupled,
    )


def failing_model(name: str = "fail", message: str = "planned failure") -> Model:
    """A model whose callable always raises RuntimeError(message): 500 / INTERNAL with that message."""

    def fail(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        raise RuntimeError(message)

    return Model(name, fail, inputs=[TensorSpec("INPUT0", "FP32", [-1])], outputs=[TensorSpec("OUTPUT0", "FP32", [-1])])


def slow_model(name: str = "slow", seconds: float = 0.5) -> Model:
    """Identity on FP32 ``INPUT0`` after sleeping ``seconds`` (or the request parameter ``sleep``).

    The sleep runs in the server's model thread pool and ends early when the server stops.
    """

    def slow(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        interruptible_sleep(float(parameters.get("sleep", seconds)))
        return {"OUTPUT0": inputs["INPUT0"]}

    return Model(name, slow, inputs=[TensorSpec("INPUT0", "FP32", [-1])], outputs=[TensorSpec("OUTPUT0", "FP32", [-1])])


def sequence_model(name: str = "sequence") -> Model:
    """A stateful accumulator (Triton's sequence extension): ``OUTPUT`` is the running sum of ``INPUT`` over
    the requests of one ``sequence_id``; ``sequence_start`` resets it, ``sequence_end`` forgets it."""
    state: dict[Any, int] = {}
    lock = threading.Lock()

    def accumulate(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        key = parameters.get("sequence_id", 0)
        value = int(inputs["INPUT"].sum())
        with lock:
            total = value if parameters.get("sequence_start") else state.get(key, 0) + value
            if parameters.get("sequence_end"):
                state.pop(key, None)
            else:
                state[key] = total
        return {"OUTPUT": np.array([total], dtype=np.int32)}

    return Model(
        name,
        accumulate,
        inputs=[TensorSpec("INPUT", "INT32", [1])],
        outputs=[TensorSpec("OUTPUT", "INT32", [1])],
    )


def train_iris_classifier(steps: int = 300, rate: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train a softmax regression on the iris measurements with full-batch gradient descent.

    Returns:
        (mean, scale, weights [4, 3], bias [3]) of the standardized linear model.
    """
    x, y = load_iris()
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    z = ((x - mean) / scale).astype(np.float64)
    onehot = np.eye(len(CLASSES))[y]
    weights = np.zeros((z.shape[1], len(CLASSES)))
    bias = np.zeros(len(CLASSES))
    for _ in range(steps):
        probs = _softmax(z @ weights + bias)
        grad = probs - onehot
        weights -= rate * (z.T @ grad) / len(z)
        bias -= rate * grad.mean(axis=0)
    return mean, scale, weights.astype(np.float32), bias.astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def iris_model(name: str = "iris") -> Model:
    """A real (small) classifier: iris species from 4 measurements in cm, trained at start-up (a few ms).

    Input ``input`` FP32 ``[-1, 4]``; outputs ``probabilities`` FP32 ``[-1, 3]`` (labelled for the
    classification extension: ``class_count`` gives ``"score:index:species"``) and ``label`` BYTES ``[-1]``.
    The v1 ``:explain`` route returns each feature's contribution to the predicted class's logit.
    """
    mean, scale, weights, bias = train_iris_classifier()

    def logits(x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float32) - mean) / scale) @ weights + bias  # type: ignore[no-any-return]

    def classify(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        probs = _softmax(logits(inputs["input"]).astype(np.float64)).astype(np.float32)
        labels = np.array([CLASSES[i].encode() for i in probs.argmax(axis=1)], dtype=object)
        return {"probabilities": probs, "label": labels}

    def explain(inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, Any]:
        x = inputs["input"].astype(np.float32)
        z = (x - mean) / scale
        predicted = logits(x).argmax(axis=1)
        explanations = [
            {"class": CLASSES[c], "contributions": dict(zip(FEATURES, (z[i] * weights[:, c]).round(4).tolist()))}
            for i, c in enumerate(predicted)
        ]
        return {"predictions": [CLASSES[c] for c in predicted], "explanations": explanations}

    return Model(
        name,
        classify,
        inputs=[TensorSpec("input", "FP32", [-1, 4])],
        outputs=[TensorSpec("probabilities", "FP32", [-1, 3]), TensorSpec("label", "BYTES", [-1])],
        max_batch_size=1024,
        labels={"probabilities": list(CLASSES)},
        explainer=explain,
        platform="numpy",
    )


def demo_models() -> list[Model]:
    """The models of ``inferkit demo`` and the ``inferkit_server`` fixture."""
    return [
        iris_model(),
        add_sub_model(),
        identity_model("identity_fp32", "FP32"),
        identity_model("identity_bytes", "BYTES"),
        repeat_model(),
        slow_model(),
    ]


def standard_models() -> list[Model]:
    """The models of inferkit's own test suite: the demo models plus every datatype's identity, failing and
    stateful models."""
    models = demo_models()
    models += [
        add_sub_model("add_sub_fp32", "FP32"),
        identity_model("identity_int64", "INT64"),
        identity_model("identity_bool", "BOOL"),
        identity_model("identity_fp16", "FP16"),
        identity_model("identity_bf16", "BF16"),
        identity_model("identity_uint8", "UINT8"),
        identity_model("identity_fp64", "FP64"),
        failing_model(),
        failing_stream_model(),
        sequence_model(),
        identity_model("versioned", "INT32", versions=("1", "2", "3")),
        llm_model(),
        llm_model("llm_once", decoupled=False),
    ]
    return models
