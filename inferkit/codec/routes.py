"""Each operation's REST method and path (v2 and v1).

Owns: URL paths relative to the server's base URL, with model names and versions quoted. gRPC wire paths live in
:mod:`inferkit.codec.grpc_methods` with the message types they carry.
Must not import: requests, urllib3, aiohttp, grpc, protobuf.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote

__all__ = ["Route", "v2", "v1"]


class Route(NamedTuple):
    """An HTTP method and a path relative to the server's base URL (always starting with ``/``)."""

    method: str
    path: str


def _q(segment: str) -> str:
    if not isinstance(segment, str) or not segment:
        raise ValueError(f"a model name must be a non-empty string, got {segment!r}")
    return quote(segment, safe="")


def _model(model: str, version: str | None) -> str:
    path = f"/v2/models/{_q(model)}"
    if version not in (None, ""):
        path += f"/versions/{_q(str(version))}"
    return path


class v2:  # noqa: N801 - a namespace mirroring the protocol's name
    """Open Inference Protocol v2 (Triton, KServe v2, MLServer) routes."""

    @staticmethod
    def server_live() -> Route:
        return Route("GET", "/v2/health/live")

    @staticmethod
    def server_ready() -> Route:
        return Route("GET", "/v2/health/ready")

    @staticmethod
    def server_metadata() -> Route:
        return Route("GET", "/v2")

    @staticmethod
    def model_metadata(model: str, version: str | None = None) -> Route:
        return Route("GET", _model(model, version))

    @staticmethod
    def model_ready(model: str, version: str | None = None) -> Route:
        return Route("GET", _model(model, version) + "/ready")

    @staticmethod
    def model_config(model: str, version: str | None = None) -> Route:
        return Route("GET", _model(model, version) + "/config")

    @staticmethod
    def model_statistics(model: str | None = None, version: str | None = None) -> Route:
        if model in (None, ""):
            return Route("GET", "/v2/models/stats")
        return Route("GET", _model(str(model), version) + "/stats")

    @staticmethod
    def infer(model: str, version: str | None = None) -> Route:
        return Route("POST", _model(model, version) + "/infer")

    @staticmethod
    def generate(model: str, version: str | None = None, stream: bool = False) -> Route:
        return Route("POST", _model(model, version) + ("/generate_stream" if stream else "/generate"))

    @staticmethod
    def repository_index() -> Route:
        return Route("POST", "/v2/repository/index")

    @staticmethod
    def repository_load(model: str) -> Route:
        return Route("POST", f"/v2/repository/models/{_q(model)}/load")

    @staticmethod
    def repository_unload(model: str) -> Route:
        return Route("POST", f"/v2/repository/models/{_q(model)}/unload")

    @staticmethod
    def trace_setting(model: str | None = None, update: bool = False) -> Route:
        path = "/v2/trace/setting" if model is None else f"/v2/models/{_q(model)}/trace/setting"
        return Route("POST" if update else "GET", path)

    @staticmethod
    def logging(update: bool = False) -> Route:
        return Route("POST" if update else "GET", "/v2/logging")


class v1:  # noqa: N801
    """KServe v1 (TensorFlow-Serving style) routes."""

    @staticmethod
    def server_live() -> Route:
        return Route("GET", "/")

    @staticmethod
    def list_models() -> Route:
        return Route("GET", "/v1/models")

    @staticmethod
    def model_ready(model: str) -> Route:
        return Route("GET", f"/v1/models/{_q(model)}")

    @staticmethod
    def predict(model: str) -> Route:
        return Route("POST", f"/v1/models/{_q(model)}:predict")

    @staticmethod
    def explain(model: str) -> Route:
        return Route("POST", f"/v1/models/{_q(model)}:explain")
