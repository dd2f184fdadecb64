"""Triton's generate extension on the gRPC clients (sync and aio): the same calls and dicts as REST, over tensors.

Owns: the per-client cache of what a generate payload needs to become a request (the model's metadata, and from
its configuration whether it is decoupled; fetched once per model and version), and the stream objects
:class:`GenerateStream` (sync) and :class:`AsyncGenerateStream` (aio) that turn each ``ModelStreamInfer`` response
into the dict REST's ``generate_stream`` yields, retried under the client's policy only before the first event
(UNAVAILABLE, RESOURCE_EXHAUSTED, no connection). ``generate`` runs ``ModelInfer``, or on a decoupled model (where
Triton refuses ``ModelInfer``) one ``ModelStreamInfer`` call whose single response is the answer, with the error
Triton's ``/generate`` gives when the model sends more than one. Payload conversion is the codec's
(:mod:`inferkit.codec.generate`).
Must not import: requests, urllib3, aiohttp, inferkit.rest_client, inferkit._transport, inferkit.aio; nor grpc at
module level.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable, Mapping, NamedTuple

from inferkit import errors
from inferkit._retry import RetryState
from inferkit.codec.generate import (
    ONE_RESPONSE_ONLY,
    check_payload,
    embedded_error,
    payload_to_request,
    response_to_dict,
)
from inferkit.codec.tensors import InferRequest, InferResponse
from inferkit.config import RetryPolicy

__all__ = ["GenerateSpecs", "GenerateStream", "AsyncGenerateStream", "NO_CONFIG", "single_answer"]

_MAX_MODELS = 1024


class Spec(NamedTuple):
    metadata: Mapping[str, Any]
    decoupled: bool


class GenerateSpecs:
    """Per client: each model's metadata and decoupled flag, fetched once (thread-safe; bounded)."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str | None], Spec] = {}
        self._lock = threading.Lock()

    def get(self, model_name: str, model_version: str | None) -> Spec | None:
        return self._specs.get((model_name, model_version or None))

    def put(self, model_name: str, model_version: str | None, metadata: Any, config: Any) -> Spec:
        if isinstance(config, Mapping) and isinstance(config.get("config"), Mapping):
            config = config["config"]
        policy = config.get("model_transaction_policy") if isinstance(config, Mapping) else None
        spec = Spec(metadata, bool(isinstance(policy, Mapping) and policy.get("decoupled")))
        with self._lock:
            if len(self._specs) >= _MAX_MODELS:
                self._specs.clear()
            self._specs[(model_name, model_version or None)] = spec
        return spec

    @staticmethod
    def request(model_name: str, model_version: str | None, payload: Any, spec: Spec) -> InferRequest:
        return payload_to_request(model_name, model_version, payload, spec.metadata)

    @staticmethod
    def check(model_name: Any, payload: Any) -> None:
        check_payload(model_name, payload)


#: Errors that mean "this server has no model configuration to give" (KServe, MLServer): not decoupled then.
NO_CONFIG = (errors.UnimplementedError, errors.NotFoundError, errors.UnsupportedOperationError)


def single_answer(model_name: str, responses: list[InferResponse]) -> dict[str, Any]:
    """The answer of ``generate`` over a stream: its one response (Triton's 200 error form otherwise)."""
    if len(responses) != 1:
        raise embedded_error(model_name, ONE_RESPONSE_ONLY if responses else "the model sent no response")
    return response_to_dict(responses[0])


def _first_event_retries(policy: RetryPolicy) -> RetryState:
    """The retry state of one stream: its retries follow the client's policy as every other call's do."""
    state = RetryState(policy, retryable=policy.retry_infer)
    state.attempt = 1
    return state


def _retry_wait(state: RetryState, exc: BaseException, events_received: int) -> float | None:
    """Seconds to wait before opening the stream again after ``exc``, or None: raise it. Never once an event was
    handed out (the answer would start again)."""
    if events_received or not isinstance(exc, errors.InferkitError):
        return None
    wait = state.on_error(exc, state.deadline)
    state.attempt += 1
    return wait


class GenerateStream:
    """The events of one gRPC ``generate_stream`` call as dicts (those REST yields): an iterator and a context
    manager. Leaving early (``close()``, ``with``, ``break``) cancels the call, so the server stops generating.
    An error response raises its typed :class:`~inferkit.errors.ServerError` (naming the model) and ends it."""

    def __init__(self, opener: Callable[[], Any], request: InferRequest, policy: RetryPolicy) -> None:
        self.model_name = request.model_name
        self.events_received = 0
        self._opener, self._request, self._retries = opener, request, _first_event_retries(policy)
        self._stream: Any = None
        self._open()

    def _open(self) -> None:
        self._stream = stream = self._opener()
        try:
            stream.send(self._request)
            stream.close_send()
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> GenerateStream:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._stream is None:
                raise StopIteration
            try:
                response = self._stream.recv()
                break
            except BaseException as exc:
                self.close()
                wait = _retry_wait(self._retries, exc, self.events_received)
                if wait is None:
                    raise
                time.sleep(wait)
                self._open()
        if response is None:
            self._stream = None
            raise StopIteration
        self.events_received += 1
        return response_to_dict(response)

    def close(self) -> None:
        """End the stream now (the call is cancelled if responses are pending). Safe to call twice."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def __enter__(self) -> GenerateStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self.close()


class AsyncGenerateStream:
    """The aio :class:`GenerateStream`: not awaited when made; an async iterator and an async context manager that
    fetches the model's metadata (once per client) and opens the call on first use. Cancelling the task reading it
    cancels the call."""

    def __init__(
        self, model_name: str, opener: Callable[[], Awaitable[tuple[Any, InferRequest]]], policy: RetryPolicy
    ) -> None:
        self.model_name = model_name
        self.events_received = 0
        self._opener: Callable[[], Awaitable[tuple[Any, InferRequest]]] | None = opener
        self._reopen = opener
        self._retries = _first_event_retries(policy)
        self._stream: Any = None

    async def _open(self) -> None:
        opener, self._opener = self._opener, None
        assert opener is not None
        stream, request = await opener()
        self._stream = stream
        try:
            await stream.send(request)
            await stream.close_send()
        except BaseException:
            await self.close()
            raise

    def __aiter__(self) -> AsyncGenerateStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._opener is not None:
            await self._open()
        while True:
            if self._stream is None:
                raise StopAsyncIteration
            try:
                response = await self._stream.recv()
                break
            except BaseException as exc:
                await self.close()
                wait = _retry_wait(self._retries, exc, self.events_received)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                self._opener = self._reopen
                await self._open()
        if response is None:
            self._stream = None
            raise StopAsyncIteration
        self.events_received += 1
        return response_to_dict(response)

    async def close(self) -> None:
        """End the stream now (the call is cancelled if responses are pending). Safe to call twice."""
        self._opener = None
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    aclose = close  # the name async generators use

    async def __aenter__(self) -> AsyncGenerateStream:
        if self._opener is not None:
            await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.cancel()  # sync: cancels the grpc.aio call without a loop turn
