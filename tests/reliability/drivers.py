"""One small driver per client kind (sync REST, sync gRPC, aio REST, aio gRPC) for the reliability suite.

Owns: building a client of a kind with a RetryPolicy and a timeout, running one operation on it to completion
(``asyncio.run`` for the aio kinds, every wait bounded), recording the retry sleeps of a kind instead of
measuring time, and the skip of aio kinds whose client does not exist yet. Must not import: the transports'
private modules at import time (they are looked up when a recorder is installed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import time
import types
from typing import Any, Callable

import numpy as np
import pytest

from inferkit import InferInput, InferRequest, RESTConfig, RetryPolicy

KINDS = ("sync_rest", "sync_grpc", "aio_rest", "aio_grpc")

#: Backoff of every case unless it says otherwise: tiny and without jitter, so sleeps are exact.
FAST: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.04, "backoff_multiplier": 2.0, "jitter": 0.0}


def aio_client_class(protocol: str) -> Any:
    """The aio client class of a protocol, or None while it does not exist yet."""
    name = "InferenceRESTClient" if protocol == "rest" else "InferenceGRPCClient"
    module = "inferkit.aio.rest_client" if protocol == "rest" else "inferkit.aio.grpc_client"
    try:
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


@dataclasses.dataclass(frozen=True)
class Driver:
    """How to make and drive one client kind."""

    kind: str

    @property
    def protocol(self) -> str:
        return "rest" if "rest" in self.kind else "grpc"

    @property
    def is_async(self) -> bool:
        return self.kind.startswith("aio")

    def client_class(self) -> Any:
        if self.kind in ("sync_rest", "sync_rest_many"):
            from inferkit.rest_client import InferenceRESTClient

            return InferenceRESTClient
        if self.kind == "sync_grpc":
            from inferkit.grpc_client import InferenceGRPCClient

            return InferenceGRPCClient
        return aio_client_class(self.protocol)

    def skip_if_missing(self) -> None:
        if self.is_async and self.client_class() is None:
            pytest.skip(f"inferkit.aio has no {self.protocol.upper()} client yet")

    def target(self, server: Any) -> str:
        return server.http_url if self.protocol == "rest" else server.grpc_address

    def make(self, url: str, *, policy: RetryPolicy, timeout: Any = 5.0, **kwargs: Any) -> Any:
        """A client for ``url`` whose ``timeout`` is given as users give it: a plain number means the same on every
        kind (the whole call, retries included); REST also takes a :class:`Timeout` of per-attempt limits."""
        cls = self.client_class()
        if self.protocol == "rest":
            config = RESTConfig(retry=policy, timeout=timeout, binary_data=kwargs.pop("binary_data", True), **kwargs)
            return cls(url, config)
        return cls(url, timeout=timeout, retry=policy, **kwargs)

    def run(self, url: str, op: Callable[[Any], Any], *, policy: RetryPolicy, timeout: Any = 5.0, **kw: Any) -> Any:
        """Make a client, run ``op(client)`` to completion, close the client; returns the op's result."""
        if not self.is_async:
            client = self.make(url, policy=policy, timeout=timeout, **kw)
            try:
                return op(client)
            finally:
                client.close()

        async def main() -> Any:
            client = self.make(url, policy=policy, timeout=timeout, **kw)
            try:
                result = op(client)
                if inspect.isawaitable(result):
                    # Bounded even if the client forgets a timeout: the test fails instead of hanging.
                    result = await asyncio.wait_for(result, 30)
                return result
            finally:
                await client.close()

        return asyncio.run(main())

    def call(self, client: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call a method of a client made outside :meth:`run` (sync kinds only; aio kinds go through run)."""
        return getattr(client, name)(*args, **kwargs)


def add_sub_request(**kwargs: Any) -> InferRequest:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(a)
    return InferRequest("add_sub", [x0, x1], **kwargs)


def sequence_request() -> InferRequest:
    x = InferInput("INPUT", [1], "INT32").set_data_from_numpy(np.array([1], dtype=np.int32))
    return InferRequest("sequence", [x], sequence_id=77, sequence_start=True)


def check_add_sub(response: Any) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + a)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - a)


# -- recording sleeps ---------------------------------------------------------------------------------------------


class SleepRecorder:
    """Records each retry sleep of a kind; sleeps for real only when ``real`` (deadline cases need the clock)."""

    def __init__(self, real: bool) -> None:
        self.real = real
        self.waits: list[float] = []

    def sync(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)

    async def aio(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            await asyncio.sleep(seconds)
        else:
            await asyncio.sleep(0)


class _Proxy(types.SimpleNamespace):
    """A stand-in for a module (``time`` or ``asyncio``) that replaces only ``sleep``."""

    def __init__(self, module: types.ModuleType, sleep: Any) -> None:
        super().__init__(sleep=sleep)
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


# Where each kind sleeps between attempts (module, attribute); the first that exists is patched.
_SLEEP_SITES: dict[str, tuple[tuple[str, str], ...]] = {
    "sync_rest": (("inferkit._transport.driver", "time"),),
    "sync_rest_many": (("inferkit._transport.driver", "time"),),
    "sync_grpc": (("inferkit._transport.driver", "time"),),
    "aio_rest": (("inferkit.aio._driver", "asyncio"),),
    "aio_grpc": (("inferkit.aio._driver", "asyncio"),),
}


def record_sleeps(monkeypatch: pytest.MonkeyPatch, kind: str, *, real: bool = False) -> SleepRecorder | None:
    """Patch the retry sleep of ``kind``; None when its sleep site is not found (sleep checks are then skipped)."""
    recorder = SleepRecorder(real)
    for module_name, attr in _SLEEP_SITES[kind]:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if not hasattr(module, attr):
            continue
        current = getattr(module, attr)
        if attr == "_sleep":
            fn = recorder.aio if inspect.iscoroutinefunction(current) else recorder.sync
            monkeypatch.setattr(module, attr, fn)
        elif attr == "time":
            monkeypatch.setattr(module, attr, _Proxy(current, recorder.sync))
        else:
            monkeypatch.setattr(module, attr, _Proxy(current, recorder.aio))
        return recorder
    return None
