"""The reference server's generate extension (``/generate`` and ``/generate_stream``), with Triton's behaviour.

Owns: turning a generate payload into a request of the model (the codec's :func:`payload_to_request`, from the
model's metadata, as Triton does), running it through the engine, and answering as Triton 2.51 does: an error
found before inference begins is an error status with ``{"error": ...}``; ``/generate`` on a model that sends more
than one response answers 200 with ``{"error": ...}``; a stream that fails after its start ends with an event
``data: {"error": ...}``; a client that goes away stops the generation (the model's generator is closed at the
next response, so a decoupled model produces nothing more) and is recorded in ``engine.abandoned``
(``ReferenceServer.abandoned("generate_stream")``).
Must not import: grpc.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Mapping

from aiohttp import web

from inferkit.codec import _json
from inferkit.codec.generate import ONE_RESPONSE_ONLY, payload_to_request, response_to_dict
from inferkit.codec.tensors import InferResponse
from inferkit.testing._engine import Engine
from inferkit.testing._model import ModelError

__all__ = ["generate", "generate_stream"]


def _responses(engine: Engine, model: str, version: str | None, payload: Mapping[str, Any]) -> AsyncIterator[Any]:
    found, _ = engine.get(model, version)
    request = payload_to_request(model, version, payload, found.metadata())
    return engine.stream(request)


async def generate(
    engine: Engine, model: str, version: str | None, payload: Mapping[str, Any]
) -> tuple[int, dict[str, Any]]:
    """``/generate``: (status, JSON object). Errors before the first response raise ModelError (an error status)."""
    responses = _responses(engine, model, version, payload)
    got: list[InferResponse] = []
    try:
        async for response in responses:
            got.append(response)
            if len(got) > 1:
                return 200, {"error": ONE_RESPONSE_ONLY}
    except ModelError as exc:
        if not got:
            raise
        return 200, {"error": exc.message}
    finally:
        await responses.aclose()  # type: ignore[attr-defined]
    if not got:
        return 200, {"error": f"model '{model}' sent no response"}
    return 200, response_to_dict(got[0])


def _event(value: Any) -> bytes:
    return b"data: " + _json.dumps(value) + b"\n\n"


async def generate_stream(engine: Engine, request: web.Request, payload: Mapping[str, Any]) -> web.StreamResponse:
    """``/generate_stream``: one event per response; errors before the first one raise ModelError (status)."""
    model = request.match_info["model"]
    responses = _responses(engine, model, request.match_info.get("version"), payload)
    try:
        first: InferResponse | None = await responses.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await responses.aclose()  # type: ignore[attr-defined]
        raise
    answer = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"})
    try:
        await answer.prepare(request)
        if first is not None:
            await answer.write(_event(response_to_dict(first)))
            async for response in responses:
                await answer.write(_event(response_to_dict(response)))
    except ModelError as exc:
        await answer.write(_event({"error": exc.message}))
    except ConnectionError:
        engine.abandoned.append(("generate_stream", "rest"))  # the client went away: generation stops here
        return answer
    except asyncio.CancelledError:
        engine.abandoned.append(("generate_stream", "rest"))
        raise
    finally:
        await responses.aclose()  # type: ignore[attr-defined]
    await answer.write_eof()
    return answer
