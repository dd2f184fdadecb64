"""Start/stop, resources left behind, TLS and mutual TLS, required auth header, custom models."""

from __future__ import annotations

import gc
import os
import ssl
import threading
import time

import grpc
import numpy as np
import pytest

from inferkit.codec.grpc_methods import GRPC_METHODS
from inferkit.testing import Model, ReferenceServer, TensorSpec
from inferkit.testing.models import add_sub_model, slow_model, standard_models
from tests.testing.helpers import add_sub_body, call, grpc_stub, infer_message


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _sockets() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def test_ready_quickly_and_nothing_left_after_stop():
    # A first start/stop loads aiohttp and grpc (and grpc's process-wide state); then every cycle must leave
    # the thread list, sockets and file descriptors exactly as they were.
    with ReferenceServer([add_sub_model()]) as warm:
        assert call(warm, "GET", "/v2/health/ready").status == 200
    gc.collect()
    threads, fds, sockets = set(threading.enumerate()), _fds(), _sockets()
    timings = []
    for _ in range(3):
        server = ReferenceServer(standard_models())
        server.start()
        timings.append(server.startup_seconds)
        assert call(server, "GET", "/v2/health/ready").status == 200
        with grpc.insecure_channel(server.grpc_address) as channel:
            assert grpc_stub(channel, "ServerReady")(GRPC_METHODS["ServerReady"].request_type(), timeout=10).ready
            message = infer_message("repeat", {"IN": np.array([1, 2], np.int32)})
            assert len(list(grpc_stub(channel, "ModelStreamInfer")(iter([message]), timeout=10))) == 2
        server.stop()  # on its own: no gc.collect() by the test
    print(f"reference server ready in {', '.join(f'{t * 1000:.1f} ms' for t in timings)}")
    assert set(threading.enumerate()) == threads
    assert _sockets() == sockets
    assert _fds() == fds


def test_stop_is_prompt_with_a_slow_model_in_flight():
    server = ReferenceServer([slow_model(seconds=30)], grpc=False).start()
    result = {}

    def client():
        try:
            body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
            result["reply"] = call(server, "POST", "/v2/models/slow/infer", body, timeout=10)
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while server.count(route="infer") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop(timeout=10)  # the sleeping model wakes up (interruptible_sleep): no 30 s wait
    thread.join(10)
    assert not thread.is_alive() and not server.running


def test_slow_model_does_not_block_other_requests():
    with ReferenceServer([slow_model(seconds=30), add_sub_model()], grpc=False) as server:
        thread = threading.Thread(
            target=call,
            args=(
                server,
                "POST",
                "/v2/models/slow/infer",
                {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            ),
            kwargs={"timeout": 10},
        )
        thread.start()
        while server.count(route="infer", model="slow") == 0:
            time.sleep(0.01)
        a = np.ones((1, 16), np.int32)
        assert call(server, "POST", "/v2/models/add_sub/infer", add_sub_body(a, a), timeout=5).status == 200
    thread.join(10)


def test_restart_and_errors():
    server = ReferenceServer([add_sub_model()], grpc=False)
    server.start()
    with pytest.raises(RuntimeError):
        server.start()
    port = server.http_port
    server.stop()
    server.stop()  # idempotent
    server.start()
    assert call(server, "GET", "/v2/health/live").status == 200
    server.stop()
    with ReferenceServer([add_sub_model()], grpc=False) as other:
        clash = ReferenceServer([add_sub_model()], grpc=False, http_port=other.http_port)
        with pytest.raises(OSError):
            clash.start()
        assert not clash.running
    assert port


def test_duplicate_model_names_rejected():
    with pytest.raises(ValueError):
        ReferenceServer([add_sub_model(), add_sub_model()])


def test_custom_model_with_plain_callable():
    def scale(inputs, parameters):
        return {"y": inputs["x"] * float(parameters.get("factor", 2.0))}

    model = Model("scale", scale, inputs=[TensorSpec("x", "FP64", [-1])], outputs=[TensorSpec("y", "FP64", [-1])])
    with ReferenceServer([model], grpc=False) as server:
        body = {
            "inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}],
            "parameters": {"factor": 3},
        }
        assert call(server, "POST", "/v2/models/scale/infer", body).json()["outputs"][0]["data"] == [3.0, 6.0]


# -- TLS, mutual TLS, auth -------------------------------------------------------------------------------------


def _client_context(tls_material, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=tls_material.ca_pem.decode())
    if with_cert:
        context.load_cert_chain(tls_material.client_cert_file, tls_material.client_key_file)
    return context


def test_tls(tls_material):
    with ReferenceServer([add_sub_model()], tls=tls_material.server) as server:
        assert server.http_url.startswith("https://") and server.grpc_url.startswith("grpcs://")
        assert call(server, "GET", "/v2/health/live", context=_client_context(tls_material, False)).status == 200
        with pytest.raises(ssl.SSLError):
            call(server, "GET", "/v2/health/live", context=ssl.create_default_context())  # untrusted CA
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_material.ca_pem)
        with grpc.secure_channel(server.grpc_address, credentials) as channel:
            assert grpc_stub(channel, "ServerLive")(GRPC_METHODS["ServerLive"].request_type(), timeout=10).live


def test_mutual_tls(tls_material):
    with ReferenceServer([add_sub_model()], tls=tls_material.server_mutual) as server:
        assert call(server, "GET", "/v2/health/live", context=_client_context(tls_material, True)).status == 200
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            call(server, "GET", "/v2/health/live", context=_client_context(tls_material, False))
        good = grpc.ssl_channel_credentials(
            tls_material.ca_pem, tls_material.client_key_pem, tls_material.client_cert_pem
        )
        with grpc.secure_channel(server.grpc_address, good) as channel:
            assert grpc_stub(channel, "ServerLive")(GRPC_METHODS["ServerLive"].request_type(), timeout=10).live
        bad = grpc.ssl_channel_credentials(tls_material.ca_pem)
        with grpc.secure_channel(server.grpc_address, bad) as channel:
            with pytest.raises(grpc.RpcError) as info:
                grpc_stub(channel, "ServerLive")(GRPC_METHODS["ServerLive"].request_type(), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_required_auth_header():
    a = np.ones((1, 16), np.int32)
    with ReferenceServer([add_sub_model()], auth=("Authorization", "Bearer secret")) as server:
        assert call(server, "GET", "/v2/health/live").status == 401
        wrong = call(server, "POST", "/v2/models/add_sub/infer", add_sub_body(a, a), {"Authorization": "Bearer nope"})
        assert wrong.status == 401 and "Authorization" in wrong.json()["error"]
        ok = call(server, "POST", "/v2/models/add_sub/infer", add_sub_body(a, a), {"Authorization": "Bearer secret"})
        assert ok.status == 200
        assert server.count(route="infer") == 2  # rejected attempts count too
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = grpc_stub(channel, "ModelInfer")
            message = infer_message("add_sub", {"INPUT0": a, "INPUT1": a})
            with pytest.raises(grpc.RpcError) as info:
                stub(message, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stub(message, timeout=10, metadata=[("authorization", "Bearer secret")]).model_name == "add_sub"
            stream = grpc_stub(channel, "ModelStreamInfer")
            with pytest.raises(grpc.RpcError) as info:
                list(stream(iter([message]), timeout=10))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_importing_inferkit_testing_loads_neither_aiohttp_nor_grpc():
    import subprocess
    import sys

    code = (
        "import sys, inferkit.testing, inferkit.testing.models, inferkit.testing.pytest_plugin, inferkit.cli\n"
        "print(','.join(m for m in ('aiohttp', 'grpc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
