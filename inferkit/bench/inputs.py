"""What ``inferkit bench`` sends: the inputs decided from flags or the model's metadata, and the one request built.

Owns: :func:`resolve_inputs`, :func:`make_data` and :func:`build_request`.

Must not import: grpc, aiohttp, tqdm, matplotlib; the codec and the tensors load inside the functions (keeps
``inferkit bench --help`` and option parsing import-light).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from inferkit.bench.options import BenchError, BenchOptions, InputSpec

__all__ = ["build_request", "make_data", "resolve_inputs"]


def resolve_inputs(
    metadata: dict[str, Any] | None,
    shapes: dict[str, tuple[int, ...]],
    datatypes: dict[str, str],
    batch_size: int = 1,
    model: str = "",
) -> list[InputSpec]:
    """Decide what to send.

    With ``--shape`` flags, exactly the inputs they name are sent (datatype from ``--datatype`` or the metadata).
    Without, every input of the metadata is sent, each ``-1`` of its shape replaced by ``batch_size``.

    Raises:
        BenchError: An input that the metadata does not list, or whose shape or datatype is unknown.
    """
    from inferkit.codec.datatypes import check_datatype  # noqa: PLC0415 - keeps option parsing import-light

    meta_inputs = {t["name"]: t for t in (metadata or {}).get("inputs", [])}
    known = ", ".join(meta_inputs) or "(no metadata)"
    for name in list(shapes) + list(datatypes):
        if metadata is not None and name not in meta_inputs:
            raise BenchError(f"model {model!r} has no input {name!r}; its inputs: {known}")
    for name in datatypes:
        if shapes and name not in shapes:
            raise BenchError(f"model {model!r}, --datatype {name}: give its shape too (--shape {name}:D0,D1,...)")
    names = list(shapes) if shapes else list(meta_inputs)
    if not names:
        raise BenchError(f"model {model!r}: no inputs to send; give them with --shape NAME:DIMS --datatype NAME:TYPE")
    specs = []
    for name in names:
        meta = meta_inputs.get(name, {})
        datatype = datatypes.get(name) or meta.get("datatype")
        if not datatype:
            raise BenchError(f"model {model!r}, input {name!r}: unknown datatype; give it with --datatype {name}:TYPE")
        try:
            datatype = check_datatype(str(datatype).upper())
        except Exception as exc:  # the codec's message names the datatypes it knows
            raise BenchError(f"model {model!r}, input {name!r}: {exc}") from None
        if name in shapes:
            shape = tuple(shapes[name])
        else:
            shape = tuple(batch_size if int(d) < 0 else int(d) for d in meta.get("shape", []))
        specs.append(InputSpec(name, datatype, shape))
    return specs


def make_data(spec: InputSpec, data: str, rng: np.random.Generator) -> np.ndarray:
    """An array for ``spec``: ``"random"`` (small values that no integer model overflows on) or ``"zeros"``."""
    from inferkit.codec.datatypes import datatype_to_dtype  # noqa: PLC0415

    shape = spec.shape
    if spec.datatype == "BYTES":
        count = int(np.prod(shape))
        if data == "zeros":
            return np.array([b""] * count, dtype=object).reshape(shape)
        letters = rng.integers(97, 123, (count, 8), dtype=np.uint8)
        return np.array([row.tobytes() for row in letters], dtype=object).reshape(shape)
    dtype = np.dtype(np.float32) if spec.datatype == "BF16" else datatype_to_dtype(spec.datatype)
    if data == "zeros":
        return np.zeros(shape, dtype=dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        return rng.integers(0, 64, shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def build_request(options: BenchOptions, specs: Sequence[InputSpec]) -> Any:
    """One InferRequest with data for every spec; built once and sent by every worker (read-only)."""
    from inferkit import InferInput, InferRequest  # noqa: PLC0415

    rng = np.random.default_rng(options.seed)
    inputs = [InferInput(s.name, list(s.shape), s.datatype) for s in specs]
    for tensor, spec in zip(inputs, specs):
        tensor.set_data_from_numpy(make_data(spec, options.data, rng))
    return InferRequest(options.model, inputs, model_version=options.model_version)
