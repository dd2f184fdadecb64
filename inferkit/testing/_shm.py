"""System shared memory of the reference server (Triton's ``system_shared_memory`` extension).

Owns: the registry of regions clients registered (name -> key, offset, byte size, mapping), reading inputs from
and writing outputs into them, and the Triton-style errors for unknown regions and out-of-bounds ranges. The
front ends (``_rest``, ``_grpc``) turn its dicts into replies. Must not import: aiohttp, grpc, protobuf.

The server only ever attaches to regions (``SharedMemoryRegion.attach``): it never unlinks a client's region,
and unregistering (or stopping the server) only unmaps it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from inferkit.codec.tensors import SHM_BYTE_SIZE, SHM_REGION, InferRequest, InferResponse, shared_memory_of
from inferkit.shm import SharedMemoryError, SharedMemoryRegion
from inferkit.testing._model import ModelError

__all__ = ["ShmRegistry", "ALREADY_REGISTERED"]

#: Message tail of a second registration of a name (Triton's words); gRPC answers it with ALREADY_EXISTS.
ALREADY_REGISTERED = "already in manager"


@dataclass
class _Registered:
    name: str
    key: str
    offset: int
    byte_size: int
    region: SharedMemoryRegion

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}


class ShmRegistry:
    """Regions registered with the server, by name (thread-safe)."""

    def __init__(self) -> None:
        self._regions: dict[str, _Registered] = {}
        self._lock = threading.Lock()

    # -- the extension's three calls -----------------------------------------------------------------------------
    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Triton's status entries: every region, or the one called ``name`` (404 when unknown)."""
        with self._lock:
            if not name:
                return [r.status() for r in self._regions.values()]
            found = self._regions.get(name)
        if found is None:
            raise ModelError(404, f"Unable to find system shared memory region: '{name}'")
        return [found.status()]

    def register(self, name: str, key: Any, offset: Any, byte_size: Any) -> None:
        """Map ``key`` (``offset`` .. ``offset + byte_size``) under ``name``.

        As Triton 2.51: a taken name is 400 over REST (gRPC: ALREADY_EXISTS, see ``ALREADY_REGISTERED``), a key that
        cannot be opened is 500 / INTERNAL.
        """
        if not isinstance(name, str) or not name:
            raise ModelError(400, "shared memory region name must be a non-empty string")
        if not isinstance(key, str) or not key:
            raise ModelError(400, f"failed to register shared memory region '{name}': 'key' must be a string")
        for label, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ModelError(
                    400, f"failed to register shared memory region '{name}': '{label}' must be an integer >= 0"
                )
        if byte_size == 0:
            raise ModelError(400, f"failed to register shared memory region '{name}': 'byte_size' must be > 0")
        with self._lock:
            if name in self._regions:
                raise ModelError(400, f"shared memory region '{name}' {ALREADY_REGISTERED}")
            try:
                region = SharedMemoryRegion.attach(key, byte_size=offset + byte_size, name=name)
            except SharedMemoryError as exc:
                raise ModelError(500, f"Unable to open shared memory region: '{key}': {exc}") from exc
            self._regions[name] = _Registered(name, region.key, offset, byte_size, region)

    def unregister(self, name: str | None = None) -> None:
        """Unmap the region called ``name`` (every region when None); an unknown name is not an error (as Triton)."""
        with self._lock:
            if name:
                gone = [self._regions.pop(name)] if name in self._regions else []
            else:
                gone = list(self._regions.values())
                self._regions.clear()
        for registered in gone:
            registered.region.close()  # a request still reading it keeps the pages mapped until it finishes

    def close_all(self) -> None:
        """Unregister everything (server stop)."""
        self.unregister(None)

    # -- inference ------------------------------------------------------------------------------------------------
    def _range(self, region_name: str, byte_size: int, offset: int, what: str) -> tuple[_Registered, int]:
        with self._lock:
            registered = self._regions.get(region_name)
        if registered is None:
            raise ModelError(400, f"Unable to find shared memory region: '{region_name}' (for {what})")
        if offset + byte_size > registered.byte_size:
            raise ModelError(
                400,
                f"Invalid offset + byte size for shared memory region: '{region_name}' (for {what}: offset {offset} "
                f"+ byte size {byte_size} > {registered.byte_size} registered bytes)",
            )
        return registered, registered.offset + offset

    def resolve_inputs(self, request: InferRequest) -> None:
        """Give every input placed in shared memory a read-only, zero-copy view of its bytes in the region."""
        for tensor in request.inputs:
            if SHM_REGION not in tensor.parameters:
                continue
            what = f"input '{tensor.name}' of model '{request.model_name}'"
            region_name, size, offset = shared_memory_of(tensor.parameters, what) or ("", 0, 0)
            registered, start = self._range(region_name, size, offset, what)
            view = registered.region.buffer[start : start + size].toreadonly()
            try:
                tensor.set_raw_data(view)
            except Exception as exc:
                raise ModelError(400, f"{what}: shared memory byte size {size} does not fit the tensor: {exc}") from exc

    def place_outputs(self, request: InferRequest, response: InferResponse) -> None:
        """Write every output the request asked for in shared memory into its region; it then carries no data."""
        wanted = {out.name: out for out in request.outputs or () if SHM_REGION in out.parameters}
        if not wanted:
            return
        for tensor in response.outputs:
            requested = wanted.get(tensor.name)
            if requested is None:
                continue
            what = f"output '{tensor.name}' of model '{request.model_name}'"
            region_name, size, offset = shared_memory_of(requested.parameters, what) or ("", 0, 0)
            registered, start = self._range(region_name, size, offset, what)
            data = memoryview(tensor.wire_bytes()).cast("B")
            if data.nbytes > size:
                raise ModelError(
                    400,
                    f"shared memory size specified with the request for output '{tensor.name}' ({size} bytes) "
                    f"should be at least {data.nbytes} bytes to hold the results",
                )
            registered.region.buffer[start : start + data.nbytes] = data
            # The reply echoes the request's parameters (byte size as asked, which may exceed the data's).
            tensor.set_shared_memory(region_name, data.nbytes, offset)
            tensor.parameters[SHM_BYTE_SIZE] = size
