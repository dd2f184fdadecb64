"""Triton's model repository extension: the parameters of a load request (a configuration and file overrides).

Owns: checking ``load_model(name, config=..., files=...)``'s arguments and building the request's parameters,
``{"config": json_text, "file:<version>/<name>": content}``, with the file contents as bytes (gRPC
``bytes_param``) or as base64 text (REST, whose parameters are JSON).
Must not import: requests, urllib3, aiohttp, grpc, protobuf.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping

from inferkit.errors import EncodeError

__all__ = ["load_parameters"]


def load_parameters(
    model_name: str, config: str | None, files: Mapping[str, bytes] | None, *, base64_files: bool
) -> dict[str, Any]:
    """The parameters of a load of ``model_name``: ``config`` (JSON text) and ``files`` (``"file:1/model.py"``).

    Raises EncodeError naming the model when ``config`` is not JSON text or a file is misnamed or not bytes.
    Triton needs a ``config`` with file overrides (it loads the model from them, not from its repository).
    """
    where = f"load of model {model_name!r}"
    params: dict[str, Any] = {}
    if config is not None:
        if not isinstance(config, str):
            raise EncodeError(f"{where}: config must be the model configuration as JSON text (json.dumps(...))")
        try:
            json.loads(config)
        except ValueError as exc:
            raise EncodeError(f"{where}: config is not valid JSON ({exc})") from None
        params["config"] = config
    for name, content in (files or {}).items():
        if not isinstance(name, str) or not name.startswith("file:") or len(name) <= len("file:"):
            raise EncodeError(f"{where}: file override {name!r} must be named 'file:<version>/<file name>'")
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise EncodeError(f"{where}: file override {name!r} must be bytes, got {type(content).__name__}")
        params[name] = base64.b64encode(content).decode("ascii") if base64_files else bytes(content)
    if params.keys() - {"config"} and "config" not in params:
        raise EncodeError(f"{where}: file overrides need a config too (the model is loaded from them alone)")
    return params
