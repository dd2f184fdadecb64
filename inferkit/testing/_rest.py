"""The REST front end of the reference server (aiohttp): Open Inference Protocol v2 and KServe v1.

Owns: the aiohttp application, its routes, error replies, response compression, auth checks, and the REST
form of every fault (with real socket behaviour: aborted and half-written connections, wrong lengths).
Bodies are built and parsed only with ``inferkit.codec`` (``rest_v2``, ``rest_v1``). Must not import: grpc.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import logging
import time
import zlib
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from inferkit.codec import _json, rest_v1, rest_v2
from inferkit.errors import DecodeError, EncodeError, http_status_for_grpc_code
from inferkit.testing._engine import Engine
from inferkit.testing._faults import Fault, FaultBook
from inferkit.testing._generate import generate, generate_stream
from inferkit.testing._model import ModelError

__all__ = ["build_app", "RequestLog"]

log = logging.getLogger("inferkit.testing")

_JSON = rest_v2.JSON_CONTENT_TYPE
_HL = rest_v2.HEADER_LENGTH
_PRE_ACTIONS = ("status", "grpc_status", "delay", "drop_before")
_MAX_BODY = 1 << 31


@dataclasses.dataclass
class Reply:
    """A complete answer, built before it is sent so that faults can bend it."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Reply:
        return cls(status, _json.dumps(value), {"Content-Type": _JSON})

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        return cls(status, rest_v2.encode_error_body(message), {"Content-Type": _JSON})

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=self.headers)


Handler = Callable[[web.Request, "Fault | None"], Awaitable["Reply | web.StreamResponse"]]


class RequestLog(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in the stubs of 3.11+
    """aiohttp's request-handler logger (``AppRunner(..., logger=RequestLog(...))``), minus the parse tracebacks.

    aiohttp logs bytes it cannot parse as HTTP/1.1 (a gRPC client's HTTP/2 preface, TLS on a plain port) as an
    "Error handling request" with a full traceback. That is a client's mistake, not the server's: it is logged
    here as one WARNING line on ``inferkit.testing`` that says what probably happened (each line once a minute;
    its repeats, such as a gRPC channel's reconnects, go to DEBUG). Every other record goes to aiohttp's logger
    unchanged.
    """

    _QUIET_SECONDS = 60.0

    def __init__(self, grpc_port: Callable[[], int | None]) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._grpc_port = grpc_port
        self._last: dict[str, float] = {}

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if not isinstance(exc, HttpProcessingError):
            self.logger.log(level, msg, *args, **kwargs)
            return
        text = self._explain(f"a client at {args[0]}" if args else "a client", exc)
        now = time.monotonic()
        repeat = now - self._last.get(text, -self._QUIET_SECONDS) < self._QUIET_SECONDS
        if len(self._last) > 1000:  # many client addresses: forget them rather than grow
            self._last.clear()
        self._last[text] = now
        log.log(logging.DEBUG if repeat else logging.WARNING, "%s", text)

    def _explain(self, who: str, exc: HttpProcessingError) -> str:
        from aiohttp import http_exceptions  # noqa: PLC0415

        # BadHttpMethod is new in aiohttp 3.10.2; before, a bad method line is a BadStatusLine.
        bad_line = (
            http_exceptions.BadStatusLine,
            getattr(http_exceptions, "BadHttpMethod", http_exceptions.BadStatusLine),
        )
        text = str(exc)
        # Newer aiohttp says "HTTPS"; older ones show the line, and a TLS handshake starts with 0x16 0x03.
        if "HTTPS" in text or "b'\\x16\\x03" in text:
            return f"{who} sent TLS to the REST port, which is plain HTTP (an https:// URL? use http://)"
        if "PRI" in text or "HTTP/2" in text or isinstance(exc, bad_line):
            port = self._grpc_port()
            where = f"use the gRPC port {port}" if port else "this server serves no gRPC"
            return f"{who} sent something that is not HTTP/1.1 to the REST port (a gRPC client? {where})"
        detail = " ".join(str(exc.message).split())[:120]
        return f"{who} sent a request that is not valid HTTP/1.1 ({detail}); answered 400"


def build_app(engine: Engine, book: FaultBook, auth: tuple[str, str] | None) -> web.Application:
    """The aiohttp application serving ``engine``'s models."""
    app = web.Application(client_max_size=_MAX_BODY)
    api = _Api(engine)

    def add(method: str, path: str, route: str, handler: Handler) -> None:
        app.router.add_route(method, path, _wrap(route, handler, book, auth, engine))

    add("GET", "/v2/health/live", "live", api.live)
    add("GET", "/v2/health/ready", "ready", api.ready)
    add("GET", "/v2", "server_metadata", api.server_metadata)
    add("GET", "/v2/models/stats", "model_statistics", api.statistics)
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        add("GET", base, "model_metadata", api.model_metadata)
        add("GET", base + "/ready", "model_ready", api.model_ready)
        add("GET", base + "/config", "model_config", api.model_config)
        add("GET", base + "/stats", "model_statistics", api.statistics)
        add("POST", base + "/infer", "infer", api.infer)
        add("POST", base + "/generate", "generate", api.generate)
        add("POST", base + "/generate_stream", "generate_stream", api.generate_stream)
    add("POST", "/v2/repository/index", "repository_index", api.repository_index)
    add("POST", "/v2/repository/models/{model}/load", "repository_load", api.repository_load)
    add("POST", "/v2/repository/models/{model}/unload", "repository_unload", api.repository_unload)
    add("GET", "/v2/trace/setting", "trace_setting", api.trace_setting)
    add("POST", "/v2/trace/setting", "trace_setting", api.trace_setting)
    add("GET", "/v2/models/{model}/trace/setting", "trace_setting", api.trace_setting)
    add("POST", "/v2/models/{model}/trace/setting", "trace_setting", api.trace_setting)
    add("GET", "/v2/logging", "log_settings", api.log_settings)
    add("POST", "/v2/logging", "log_settings", api.log_settings)
    add("GET", "/v2/systemsharedmemory/status", "shm_status", api.shm_status)
    add("GET", "/v2/systemsharedmemory/region/{region}/status", "shm_status", api.shm_status)
    add("POST", "/v2/systemsharedmemory/region/{region}/register", "shm_register", api.shm_register)
    add("POST", "/v2/systemsharedmemory/unregister", "shm_unregister", api.shm_unregister)
    add("POST", "/v2/systemsharedmemory/region/{region}/unregister", "shm_unregister", api.shm_unregister)
    add("GET", "/", "v1_live", api.v1_live)
    add("GET", "/v1/models", "v1_models", api.v1_models)
    add("GET", "/v1/models/{model:[^/:]+}", "v1_ready", api.v1_ready)
    add("POST", "/v1/models/{model:[^/]+}:predict", "v1_predict", api.v1_predict)
    add("POST", "/v1/models/{model:[^/]+}:explain", "v1_explain", api.v1_explain)
    return app


def _wrap(route: str, handler: Handler, book: FaultBook, auth: tuple[str, str] | None, engine: Engine) -> Any:
    async def serve(request: web.Request) -> web.StreamResponse:
        engine.last_headers = {k.lower(): v for k, v in request.headers.items()}
        fault = book.arrive(route, request.match_info.get("model"), "rest")
        if fault is not None and fault.action in _PRE_ACTIONS:
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.action == "drop_before":
                _abort(request)
                return web.Response()  # never sent: the transport is gone
            else:
                return _fault_reply(fault).response()
        if auth is not None and request.headers.get(auth[0]) != auth[1]:
            reply = Reply.error(401, f"missing or wrong '{auth[0]}' header: this server requires authentication")
        else:
            try:
                answer = await handler(request, fault)
                if isinstance(answer, web.StreamResponse):
                    return answer  # already sent (an event stream)
                reply = answer
            except ModelError as exc:
                reply = Reply.error(exc.status, exc.message)
            except DecodeError as exc:
                # Triton answers 500 for a v2 body it cannot parse (malformed JSON, no inputs): its parser's errors
                # are not classed as the client's, and Triton is the reference. KServe's v1 routes answer 400.
                reply = Reply.error(500 if request.path.startswith("/v2") else 400, str(exc))
            except EncodeError as exc:
                reply = Reply.error(400, str(exc))
            except Exception as exc:  # a bug here or in a model: answer like a server would, with the reason
                reply = Reply.error(500, f"reference server error: {type(exc).__name__}: {exc}")
        if request.transport is None or request.transport.is_closing():
            engine.abandoned.append((route, "rest"))  # the client closed its connection while the request ran
        if fault is not None:
            reply = _bend(reply, fault)
        reply = _compress(reply, request.headers.get("Accept-Encoding", ""))
        if fault is None or fault.action not in ("drop_during", "truncate", "trickle"):
            return reply.response()
        return await _send_badly(request, reply, fault)

    return serve


def _fault_reply(fault: Fault) -> Reply:
    status = fault.status if fault.action == "status" else http_status_for_grpc_code(fault.code)
    reply = Reply.error(status, fault.error_message())
    if fault.retry_after is not None:
        seconds = fault.retry_after
        reply.headers["Retry-After"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
    return reply


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _bend(reply: Reply, fault: Fault) -> Reply:
    """Apply the body-level faults (wrong lengths, malformed JSON) to a built reply."""
    if fault.action == "lie_header_length":
        true_length = int(reply.headers.get(_HL, len(reply.body)))
        lie = fault.value if fault.value is not None else len(reply.body) + 1
        if lie == true_length:
            lie += 1
        reply.headers[_HL] = str(lie)
    elif fault.action == "lie_binary_size" and _HL in reply.headers:
        length = int(reply.headers[_HL])
        header = _json.loads(reply.body[:length])
        for output in header.get("outputs", []):
            params = output.get("parameters") or {}
            if "binary_data_size" in params:
                params["binary_data_size"] += fault.value if fault.value is not None else 4
                break
        head = _json.dumps(header)
        reply.body = head + reply.body[length:]
        reply.headers[_HL] = str(len(head))
    elif fault.action == "malformed_json":
        body = reply.body[: int(reply.headers.get(_HL, len(reply.body)))]
        reply.body = body[: len(body) // 2] if len(body) >= 8 else b'{"outputs": [{"na'
        reply.headers.pop(_HL, None)
        reply.headers["Content-Type"] = _JSON
    return reply


def _compress(reply: Reply, accept: str) -> Reply:
    if not reply.body or not accept:
        return reply
    offered = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if "gzip" in offered:
        reply.body = gzip.compress(reply.body, compresslevel=1)
        reply.headers["Content-Encoding"] = "gzip"
    elif "deflate" in offered:
        reply.body = zlib.compress(reply.body, 1)
        reply.headers["Content-Encoding"] = "deflate"
    return reply


async def _send_badly(request: web.Request, reply: Reply, fault: Fault) -> web.StreamResponse:
    """Send a reply with a transport-level fault: cut short (reset or clean close) or trickled."""
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    response.content_length = len(reply.body)
    await response.prepare(request)
    body = reply.body
    if fault.action == "trickle":
        for start in range(0, len(body), fault.chunk_size):
            await response.write(body[start : start + fault.chunk_size])
            await asyncio.sleep(fault.seconds)
        await response.write_eof()
        return response
    cut = fault.value if fault.value is not None else len(body) // 2
    await response.write(body[: max(0, min(cut, len(body) - 1))])
    transport = request.transport
    if transport is not None:
        if fault.action == "drop_during":
            transport.abort()
        else:
            transport.close()  # flushes what was written, then FIN: a clean close, short of Content-Length
    return response


class _Api:
    """The route handlers: request in, Reply out (ModelError/DecodeError become error replies)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- health and metadata ----------------------------------------------------------------------------------
    async def live(self, request: web.Request, fault: Fault | None) -> Reply:
        return Reply(200, b"", {"Content-Type": _JSON})

    async def ready(self, request: web.Request, fault: Fault | None) -> Reply:
        return Reply(200, b"", {"Content-Type": _JSON})

    async def server_metadata(self, request: web.Request, fault: Fault | None) -> Reply:
        return Reply.json(self.engine.server_metadata())

    async def model_metadata(self, request: web.Request, fault: Fault | None) -> Reply:
        model, _ = self.engine.get(request.match_info["model"], request.match_info.get("version"))
        return Reply.json(model.metadata())

    async def model_ready(self, request: web.Request, fault: Fault | None) -> Reply:
        name = request.match_info["model"]
        try:
            ready = self.engine.is_ready(name, request.match_info.get("version"))
        except ModelError:  # as Triton 2.51: an unknown model or version is a 400 here, not a 404
            return Reply.error(400, f"requested model '{name}' is not available: model version not ready")
        if ready:
            return Reply(200, b"", {"Content-Type": _JSON})
        return Reply.error(400, f"model '{name}' is not ready (unloaded)")

    async def model_config(self, request: web.Request, fault: Fault | None) -> Reply:
        model, _ = self.engine.get(request.match_info["model"], request.match_info.get("version"))
        return Reply.json(self.engine.model_config(model))

    async def statistics(self, request: web.Request, fault: Fault | None) -> Reply:
        stats = self.engine.statistics(request.match_info.get("model"), request.match_info.get("version"))
        return Reply.json(stats)

    # -- inference --------------------------------------------------------------------------------------------
    async def infer(self, request: web.Request, fault: Fault | None) -> Reply:
        name = request.match_info["model"]
        version = request.match_info.get("version")
        self.engine.get(name, version)  # an unknown model is a 404 whatever the body
        body = await request.read()
        header_length = rest_v2.parse_header_length(request.headers.get(_HL), len(body), "request")
        infer_request = rest_v2.decode_infer_request(body, header_length, model_name=name, model_version=version)
        response = await self.engine.infer(infer_request)
        binary_output = bool(infer_request.parameters.get("binary_data_output", False))
        if fault is not None and fault.action == "lie_binary_size":
            binary_output = True
            for out in infer_request.outputs or ():
                out.binary_data = True
        encoded = rest_v2.encode_infer_response(response, requested=infer_request.outputs, binary_output=binary_output)
        return Reply(200, encoded.body, dict(encoded.headers))

    async def generate(self, request: web.Request, fault: Fault | None) -> Reply:
        status, value = await generate(
            self.engine, request.match_info["model"], request.match_info.get("version"), await _json_body(request)
        )
        return Reply.json(value, status)

    async def generate_stream(self, request: web.Request, fault: Fault | None) -> web.StreamResponse:
        return await generate_stream(self.engine, request, await _json_body(request))

    # -- repository -------------------------------------------------------------------------------------------
    async def repository_index(self, request: web.Request, fault: Fault | None) -> Reply:
        body = await _json_body(request)
        return Reply.json(self.engine.repository_index(bool(body.get("ready", False))))

    async def repository_load(self, request: web.Request, fault: Fault | None) -> Reply:
        params = dict((await _json_body(request)).get("parameters") or {})
        for key, value in params.items():  # file overrides travel as base64 over REST
            if key.startswith("file:"):
                try:
                    params[key] = base64.b64decode(value, validate=True)
                except (TypeError, ValueError):
                    raise ModelError(400, f"failed to load: file override '{key}' is not base64") from None
        self.engine.load(request.match_info["model"], params)
        return Reply(200, b"", {"Content-Type": _JSON})

    async def repository_unload(self, request: web.Request, fault: Fault | None) -> Reply:
        await _json_body(request)
        self.engine.unload(request.match_info["model"])
        return Reply(200, b"", {"Content-Type": _JSON})

    # -- trace and log settings -------------------------------------------------------------------------------
    async def trace_setting(self, request: web.Request, fault: Fault | None) -> Reply:
        model = request.match_info.get("model")
        if model is not None and not self.engine.loaded.get(model, False):
            raise ModelError(400, f"Request for unknown model : {model}")
        settings = self.engine.settings
        if request.method == "GET":
            return Reply.json(settings.get_trace(model))
        return Reply.json(settings.update_trace(model, await _settings_body(request)))

    async def log_settings(self, request: web.Request, fault: Fault | None) -> Reply:
        settings = self.engine.settings
        if request.method == "GET":
            return Reply.json(dict(settings.log))
        return Reply.json(settings.update_log(await _settings_body(request)))

    # -- system shared memory ---------------------------------------------------------------------------------
    async def shm_status(self, request: web.Request, fault: Fault | None) -> Reply:
        return Reply.json(self.engine.shm.status(request.match_info.get("region")))

    async def shm_register(self, request: web.Request, fault: Fault | None) -> Reply:
        body = await _json_body(request)
        name = request.match_info["region"]
        if "key" not in body or "byte_size" not in body:
            raise ModelError(
                400, f"failed to register shared memory region '{name}': the body needs 'key' and 'byte_size'"
            )
        self.engine.shm.register(name, body["key"], body.get("offset", 0), body["byte_size"])
        return Reply(200, b"", {"Content-Type": _JSON})

    async def shm_unregister(self, request: web.Request, fault: Fault | None) -> Reply:
        self.engine.shm.unregister(request.match_info.get("region"))
        return Reply(200, b"", {"Content-Type": _JSON})

    # -- KServe v1 --------------------------------------------------------------------------------------------
    async def v1_live(self, request: web.Request, fault: Fault | None) -> Reply:
        return Reply.json({"status": "alive"})

    async def v1_models(self, request: web.Request, fault: Fault | None) -> Reply:
        return Reply.json({"models": [n for n, ok in self.engine.loaded.items() if ok]})

    async def v1_ready(self, request: web.Request, fault: Fault | None) -> Reply:
        name = request.match_info["model"]
        ready = self.engine.is_ready(name)
        return Reply.json({"name": name, "ready": ready}, 200 if ready else 503)

    async def _v1_request(self, request: web.Request) -> Any:
        name = request.match_info["model"]
        model, _ = self.engine.get(name)
        body = rest_v1.decode_predict_request(await request.read(), model_name=name)
        input_name = model.inputs[0].name if len(model.inputs) == 1 else "input-0"
        return rest_v1.v1_instances_to_v2_request(body, name, input_name=input_name)

    async def v1_predict(self, request: web.Request, fault: Fault | None) -> Reply:
        infer_request = await self._v1_request(request)
        response = await self.engine.infer(infer_request, lenient_datatypes=True)
        return Reply.json(rest_v1.v2_response_to_v1_body(response))

    async def v1_explain(self, request: web.Request, fault: Fault | None) -> Reply:
        name = request.match_info["model"]
        if self.engine.get(name)[0].explainer is None:
            raise ModelError(501, f"model '{name}' has no explainer")
        infer_request = await self._v1_request(request)
        model, _ = self.engine.get(infer_request.model_name)
        arrays = model.check_request(infer_request, lenient_datatypes=True)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self.engine.executor, self.engine.explain, model.name, arrays, dict(infer_request.parameters)
            )
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(500, f"model '{model.name}' explainer failed: {type(exc).__name__}: {exc}") from exc
        return Reply.json(result)


async def _settings_body(request: web.Request) -> Mapping[str, Any]:
    """A settings update: a JSON object (Triton ignores a JSON array; anything else is its parse error, a 500)."""
    try:
        value = _json.loads(await request.read(), what="request body")
    except DecodeError:
        raise ModelError(500, "failed to parse the request JSON buffer: Invalid value. at 0") from None
    return value if isinstance(value, dict) else {}


async def _json_body(request: web.Request) -> Mapping[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    value = _json.loads(raw, what="request body")
    if not isinstance(value, dict):
        raise ModelError(400, "the request body must be a JSON object")
    return value
