"""Real inference servers (Triton, KServe ModelServer, MLServer) on 127.0.0.1, for interop tests and benchmarks.

This module owns: building one cached virtual environment per server (atomically), preparing each server's model
repository and environment, starting the server in its own process group on free loopback ports, waiting for every
model to be ready with bounded timeouts, checking that nothing listens beyond loopback, and stopping the group.

It must not import pytest (benchmarks use it) nor inferkit (it proves the servers with raw HTTP only), and it never
touches a process it did not start: it stops servers by the process group it created for them.

Usage::

    from tests.interop.harness import start_server

    with start_server("triton") as server:
        server.http_url, server.grpc_address, server.models

Environment:
    INFERKIT_INTEROP_CACHE: directory holding the server venvs (default ``~/.cache/inferkit-interop``).
    INFERKIT_INTEROP_PYTHON: base interpreter for the venvs (default: the interpreter that created the running one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
CACHE_ENV = "INFERKIT_INTEROP_CACHE"
PYTHON_ENV = "INFERKIT_INTEROP_PYTHON"
# Bump when the layout of a built venv changes, so stale caches are rebuilt instead of half-used.
VENV_FORMAT = "2"
COMPLETE_MARKER = ".inferkit-interop-complete"

# Pinned so that a cached venv, the test expectations and the published results describe the same server.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    # nvidia-pytriton ships tritonserver 2.51; its python backend stub silently corrupts tensors with numpy 2.
    "triton": ("nvidia-pytriton==0.7.0", "numpy<2"),
    "kserve": ("kserve==0.21.0",),
    "mlserver": ("mlserver==1.7.1",),
}

# Triton: header that guards the statistics API (a real access-token case). Without it Triton answers HTTP 403, and
# gRPC UNAVAILABLE; over gRPC it expects the header name with a "triton-grpc-protocol-" prefix.
TRITON_ACCESS_HEADER = ("triton-access-token", "interop-secret")
TRITON_GRPC_ACCESS_HEADER = ("triton-grpc-protocol-triton-access-token", "interop-secret")

TRITON_DATATYPES: dict[str, str] = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
    "BF16": "TYPE_BF16",
}
NUMPY_DATATYPES = tuple(d for d in TRITON_DATATYPES if d != "BF16")


class HarnessError(RuntimeError):
    """A server could not be prepared or started; the message carries the reason and a log tail."""


class EnvironmentUnavailable(HarnessError):
    """The server's virtual environment cannot be built here (no registry access, no interpreter...)."""


# --------------------------------------------------------------------------------------------------------------------
# Virtual environments
# --------------------------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Directory that holds the cached server venvs."""
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "inferkit-interop"
    root.mkdir(parents=True, exist_ok=True)
    return root


def base_python() -> str:
    """The interpreter used to create server venvs (a real one, not a venv's, so venvs do not nest)."""
    configured = os.environ.get(PYTHON_ENV)
    if configured:
        return configured
    return getattr(sys, "_base_executable", None) or sys.executable


def _python_identity(python: str) -> dict[str, str]:
    script = (
        "import json, sys, sysconfig; print(json.dumps({'version': sys.version, "
        "'libdir': sysconfig.get_config_var('LIBDIR') or '', 'xy': '%d.%d' % sys.version_info[:2]}))"
    )
    try:
        out = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvironmentUnavailable(f"cannot run the base interpreter {python!r}: {exc}") from exc
    return json.loads(out)


@dataclass(frozen=True)
class VirtualEnv:
    """A complete, cached server environment."""

    server: str
    path: Path
    python_xy: str
    base_libdir: str
    built: bool
    build_seconds: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return self.path / "lib" / f"python{self.python_xy}" / "site-packages"


def venv_key(server: str, python: str) -> str:
    """Cache directory name: server plus a hash of everything that changes the venv's content."""
    ident = _python_identity(python)
    blob = json.dumps(
        {"format": VENV_FORMAT, "requirements": REQUIREMENTS[server], "python": ident["version"], "exe": python},
        sort_keys=True,
    )
    return f"{server}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive advisory lock, waited on for at most ``timeout`` seconds (another run may be building)."""
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise HarnessError(f"could not lock {path} within {timeout:.0f}s") from exc
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def ensure_venv(server: str, *, python: Optional[str] = None, timeout: float = 1200.0) -> VirtualEnv:
    """Return the server's venv, building it first if the cache has no complete one.

    The build happens in a temporary directory next to the final one and is renamed into place only when complete
    (marker file included), so an interrupted build never leaves a half venv that looks usable. Concurrent runs
    serialize on a lock file; the loser finds the winner's venv.

    Raises:
        EnvironmentUnavailable: the interpreter is missing or pip could not install the requirements (e.g. offline).
    """
    if server not in REQUIREMENTS:
        raise ValueError(f"unknown server {server!r}; expected one of {sorted(REQUIREMENTS)}")
    python = python or base_python()
    ident = _python_identity(python)
    root = cache_root()
    final = root / venv_key(server, python)

    def done() -> Optional[VirtualEnv]:
        marker = final / COMPLETE_MARKER
        if not marker.is_file():
            return None
        info = json.loads(marker.read_text())
        return VirtualEnv(server, final, ident["xy"], ident["libdir"], False, float(info.get("build_seconds", 0.0)))

    cached = done()
    if cached is not None:
        return cached
    with _file_lock(root / f"{final.name}.lock", timeout=timeout):
        cached = done()
        if cached is not None:
            return cached
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=root))
        log = root / f"{final.name}.build.log"
        try:
            with open(log, "w") as out:

                def run(cmd: Sequence[str], seconds: float) -> None:
                    out.write(f"$ {' '.join(map(str, cmd))}\n")
                    out.flush()
                    remaining = max(1.0, timeout - (time.monotonic() - started))
                    try:
                        subprocess.run(
                            list(map(str, cmd)),
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            timeout=min(seconds, remaining),
                            check=True,
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"},
                        )
                    except (OSError, subprocess.SubprocessError) as exc:
                        out.flush()
                        raise EnvironmentUnavailable(
                            f"building the {server} venv failed at `{' '.join(map(str, cmd))}`: {exc}\n"
                            f"--- tail of {log} ---\n{_tail(log, 25)}"
                        ) from exc

                run([python, "-m", "venv", tmp], 120)
                # Console scripts get the temp path in their shebang; everything is run as `python -m`/`-c` instead.
                run([tmp / "bin" / "python", "-m", "pip", "install", "--no-input", *REQUIREMENTS[server]], timeout)
                if server == "triton":
                    _prepare_triton_backends(tmp, ident["xy"])
            seconds = time.monotonic() - started
            info = {"server": server, "requirements": REQUIREMENTS[server], "python": ident["version"]}
            (tmp / COMPLETE_MARKER).write_text(json.dumps({**info, "build_seconds": round(seconds, 1)}))
            os.chmod(tmp, 0o755)  # mkdtemp made it private; the cache may be shared by users of one machine
            if final.exists():  # an incomplete leftover from a killed build before markers were checked
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return VirtualEnv(server, final, ident["xy"], ident["libdir"], True, seconds)


def _prepare_triton_backends(venv: Path, python_xy: str) -> None:
    """Lay out ``<venv>/triton-backends/python`` as tritonserver expects: backend library, utils and the stub
    built for this Python version (the wheel keeps stubs for several versions in a separate folder)."""
    site = venv / "lib" / f"python{python_xy}" / "site-packages" / "pytriton" / "tritonserver"
    stub = site / "python_backend_stubs" / python_xy / "triton_python_backend_stub"
    if not stub.is_file():
        raise EnvironmentUnavailable(f"nvidia-pytriton ships no python backend stub for Python {python_xy}")
    target = venv / "triton-backends" / "python"
    target.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(site / "backends" / "python" / name, target / name)
    shutil.copy2(stub, target / "triton_python_backend_stub")


# --------------------------------------------------------------------------------------------------------------------
# Processes, ports and readiness
# --------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(
    url: str, path: str, timeout: float = 2.0, headers: Optional[Mapping[str, str]] = None
) -> tuple[int, bytes]:
    """GET ``path`` from ``url`` (``http://host:port``) with the standard library; returns (status, body)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_post(
    url: str, path: str, body: bytes, headers: Optional[Mapping[str, str]] = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` to ``path``; returns (status, lower-cased headers, body)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **dict(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _listening_sockets(pgid: int) -> list[str]:
    """Addresses that processes of group ``pgid`` listen on (TCP), read from /proc; [] where /proc is absent."""
    inodes: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (OSError, ValueError, IndexError):
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            addr = socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, raw)
            found.append(f"{addr}:{int(hex_port, 16)}")
    return found


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")


class ServerProcess:
    """A server process in its own process group, with its output in a log file."""

    def __init__(self, cmd: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> None:
        self.cmd = list(map(str, cmd))
        self.log_path = log_path
        with open(log_path, "ab") as log:
            log.write(f"$ {' '.join(self.cmd)}\n".encode())
            log.flush()
            # A new session makes the server the leader of its own group: stop() signals exactly that group.
            self.popen = subprocess.Popen(
                self.cmd,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    def listening(self) -> list[str]:
        return _listening_sockets(self.pid)

    def stop(self, grace: float = 10.0) -> Optional[int]:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; returns the leader's exit code."""

        def signal_group(sig: int) -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

        if self.alive():
            signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=5)
        # Children (Triton's python stubs, worker processes) may outlive the leader: end the rest of our group.
        signal_group(signal.SIGKILL)
        return self.popen.returncode


@dataclass
class Server:
    """A running server and what tests need to know about it.

    Attributes:
        name: "triton", "kserve" or "mlserver".
        http_url: ``http://127.0.0.1:PORT``.
        grpc_address: ``127.0.0.1:PORT``.
        models: models loaded and ready at startup.
        capabilities: feature names the tests branch on (``*_CAPABILITIES`` next to each starter): v1_rest,
            v2_rest, v2_grpc, binary_tensor_data, model_config, statistics, repository, stream, request_gzip,
            request_deflate, fail_model, access_token, echo_parameters, non_utf8_bytes_rest, fp16, bf16.
        datatypes: datatypes the identity models of this server round-trip.
        startup_seconds: from spawn to every model ready.
        info: server-specific extras (e.g. the Triton access-token header, the model loaded via the repository API).
    """

    name: str
    http_url: str
    grpc_address: str
    models: tuple[str, ...]
    capabilities: frozenset[str]
    datatypes: tuple[str, ...]
    process: ServerProcess
    workdir: Path
    startup_seconds: float = 0.0
    venv: Optional[VirtualEnv] = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.grpc_address}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def identity(self, datatype: str) -> tuple[str, str, str]:
        """(model, input, output) that echo a tensor of ``datatype``: ``("identity", "INPUT_FP32", "OUTPUT_FP32")``.

        Every server has one ``identity`` model that answers OUTPUT_<T> for each INPUT_<T> it receives.
        """
        if datatype not in self.datatypes:
            raise KeyError(f"{self.name}'s identity model does not take {datatype}")
        return "identity", f"INPUT_{datatype}", f"OUTPUT_{datatype}"

    def log_tail(self, lines: int = 60) -> str:
        return self.process.tail(lines)

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_ready(
    process: ServerProcess,
    http_url: str,
    grpc_address: str,
    ready_paths: Sequence[str],
    timeout: float,
) -> None:
    """Wait until every path in ``ready_paths`` answers 200 and the gRPC port accepts connections."""
    deadline = time.monotonic() + timeout
    pending = list(ready_paths)
    last = ""
    while pending:
        if not process.alive():
            raise HarnessError(f"server exited with {process.popen.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise HarnessError(f"not ready after {timeout:.0f}s; still waiting for {pending} (last: {last})")
        try:
            status, body = http_get(http_url, pending[0], timeout=2.0)
            last = f"{pending[0]} -> {status} {body[:200]!r}"
            if status == 200:
                pending.pop(0)
                continue
        except OSError as exc:
            last = f"{pending[0]} -> {exc}"
        time.sleep(0.1)
    host, port = grpc_address.rsplit(":", 1)
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline or not process.alive():
                raise HarnessError(f"gRPC port {grpc_address} not accepting connections: {exc}") from exc
            time.sleep(0.1)


def _launch(
    name: str,
    make: Any,
    *,
    timeout: float,
    attempts: int = 2,
) -> Server:
    """Run ``make(workdir) -> (cmd, env, cwd, http_url, grpc_address, ready_paths, fields)`` and wait for it.

    A second attempt with fresh ports covers the rare race where a probed free port was taken before the bind.
    On failure the process group is stopped and the log tail is part of the error.
    """
    errors = []
    for _ in range(attempts):
        workdir = Path(tempfile.mkdtemp(prefix=f"inferkit-interop-{name}-"))
        cmd, env, cwd, http_url, grpc_address, ready_paths, fields = make(workdir)
        started = time.monotonic()
        process = ServerProcess(cmd, env=env, cwd=cwd, log_path=workdir / f"{name}.log")
        try:
            _wait_ready(process, http_url, grpc_address, ready_paths, timeout)
            exposed = [a for a in process.listening() if not _is_loopback(a)]
            if exposed:
                raise HarnessError(f"{name} listens beyond loopback on {exposed}; refusing to run it")
        except HarnessError as exc:
            tail = process.tail(60)
            process.stop()
            errors.append(f"{exc}\n--- tail of {process.log_path} ---\n{tail}")
            address_in_use = "address already in use" in tail.lower() or "errno 98" in tail.lower()
            shutil.rmtree(workdir, ignore_errors=True)
            if address_in_use:
                continue
            break
        return Server(
            name=name,
            http_url=http_url,
            grpc_address=grpc_address,
            process=process,
            workdir=workdir,
            startup_seconds=time.monotonic() - started,
            **fields,
        )
    raise HarnessError(f"{name} did not start:\n" + "\n".join(errors))


def _base_env(venv: VirtualEnv) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LD_PRELOAD"))}
    # The venv's bin first: Triton's stub and any `python` a server spawns must find this venv, not ours.
    env["PATH"] = f"{venv.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv.path)
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# --------------------------------------------------------------------------------------------------------------------
# Triton
# --------------------------------------------------------------------------------------------------------------------

TRITON_MODELS_DIR = HERE / "triton_models"
TRITON_LOADABLE = "loadable"  # in the repository, not loaded at startup: loaded/unloaded through the repository API
TRITON_CAPABILITIES = frozenset(
    {
        "v2_rest",
        "v2_grpc",
        "binary_tensor_data",
        "model_config",
        "statistics",
        "repository",
        "stream",
        "request_gzip",
        "request_deflate",
        "fail_model",
        "access_token",
        "non_utf8_bytes_rest",
    }
)


def build_triton_repository(target: Path) -> list[str]:
    """Copy tests/interop/triton_models into ``target``; return the models to load at startup (all but loadable).

    A copy, so that the python backend's bytecode never lands in the source tree.
    """
    startup = []
    for src in sorted(TRITON_MODELS_DIR.iterdir()):
        if src.is_dir() and (src / "config.pbtxt").is_file():
            shutil.copytree(src, target / src.name, ignore=shutil.ignore_patterns("__pycache__"))
            if src.name != TRITON_LOADABLE:
                startup.append(src.name)
    return startup


def start_triton(*, venv: Optional[VirtualEnv] = None, timeout: float = 180.0) -> Server:
    """Start tritonserver (from the nvidia-pytriton wheel) with the interop model repository.

    Models are loaded in explicit control mode (each named with --load-model), so the repository API can load and
    unload ``loadable``. Metrics are off; the statistics API requires ``TRITON_ACCESS_HEADER``.
    """
    venv = venv or ensure_venv("triton")
    triton_dir = venv.site_packages / "pytriton" / "tritonserver"
    binary = triton_dir / "bin" / "tritonserver"

    def make(workdir: Path) -> tuple[Any, ...]:
        repo = workdir / "models"
        repo.mkdir()
        startup = build_triton_repository(repo)
        http_port, grpc_port = free_port(), free_port()
        env = _base_env(venv)
        # The stub must link the same libpython build as the stdlib it imports: the base Python's LIBDIR first.
        libs = [str(venv.site_packages / "nvidia_pytriton.libs"), venv.base_libdir]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        token = "{}={}".format(*TRITON_ACCESS_HEADER)  # flag syntax: <apis>:<header>=<value>
        cmd = [
            binary,
            f"--model-repository={repo}",
            f"--backend-directory={venv.path / 'triton-backends'}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            f"--http-port={http_port}",
            f"--grpc-port={grpc_port}",
            "--allow-metrics=false",
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in startup],
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--exit-timeout-secs=5",
            f"--http-restricted-api=statistics:{token}",
            f"--grpc-restricted-protocol=statistics:{token}",
            "--log-verbose=0",
        ]
        http_url = f"http://127.0.0.1:{http_port}"
        fields = {
            "models": tuple(startup),
            "capabilities": TRITON_CAPABILITIES | {"bf16", "fp16"},
            "datatypes": tuple(TRITON_DATATYPES),
            "venv": venv,
            "info": {
                "access_header": TRITON_ACCESS_HEADER,
                "grpc_access_header": TRITON_GRPC_ACCESS_HEADER,
                "loadable_model": TRITON_LOADABLE,
                "decoupled_model": "repeat_int32",
                "fail_model": "fail",
            },
        }
        ready = [f"/v2/models/{m}/ready" for m in startup] + ["/v2/health/ready"]
        return cmd, env, workdir, http_url, f"127.0.0.1:{grpc_port}", ready, fields

    return _launch("triton", make, timeout=timeout)


# --------------------------------------------------------------------------------------------------------------------
# KServe ModelServer
# --------------------------------------------------------------------------------------------------------------------

KSERVE_SCRIPT = HERE / "kserve_server.py"
KSERVE_MODELS = ("add_sub", "identity", "fail")
# No request_gzip/deflate: KServe's REST server does not decode a compressed request body (400).
KSERVE_CAPABILITIES = frozenset(
    {"v1_rest", "v2_rest", "v2_grpc", "binary_tensor_data", "fail_model", "repository", "echo_parameters"}
)


def start_kserve(*, venv: Optional[VirtualEnv] = None, timeout: float = 120.0) -> Server:
    """Start a KServe ModelServer running tests/interop/kserve_server.py (v1 + v2 REST, v2 gRPC, loopback only)."""
    venv = venv or ensure_venv("kserve")

    def make(workdir: Path) -> tuple[Any, ...]:
        http_port, grpc_port = free_port(), free_port()
        cmd = [venv.python, KSERVE_SCRIPT, f"--http_port={http_port}", f"--grpc_port={grpc_port}", "--workers=1"]
        http_url = f"http://127.0.0.1:{http_port}"
        fields = {
            "models": KSERVE_MODELS,
            "capabilities": KSERVE_CAPABILITIES | {"fp16"},
            "datatypes": NUMPY_DATATYPES,
            "venv": venv,
            "info": {"fail_model": "fail"},
        }
        ready = [f"/v2/models/{m}/ready" for m in KSERVE_MODELS] + [f"/v1/models/{m}" for m in KSERVE_MODELS]
        return cmd, _base_env(venv), workdir, http_url, f"127.0.0.1:{grpc_port}", ready, fields

    return _launch("kserve", make, timeout=timeout)


# --------------------------------------------------------------------------------------------------------------------
# MLServer
# --------------------------------------------------------------------------------------------------------------------

MLSERVER_MODELS_DIR = HERE / "mlserver_models"
MLSERVER_MODELS = ("add_sub", "identity", "fail")
# No binary_tensor_data, no request_deflate (422), and no model config or statistics endpoints.
MLSERVER_CAPABILITIES = frozenset({"v2_rest", "v2_grpc", "fail_model", "repository", "echo_parameters", "request_gzip"})
_MLSERVER_MAIN = "import sys; from mlserver.cli import main; sys.argv[0] = 'mlserver'; sys.exit(main())"


def start_mlserver(*, venv: Optional[VirtualEnv] = None, timeout: float = 120.0) -> Server:
    """Start MLServer on tests/interop/mlserver_models (settings.json binds 127.0.0.1; ports come from env)."""
    venv = venv or ensure_venv("mlserver")

    def make(workdir: Path) -> tuple[Any, ...]:
        repo = workdir / "models"
        shutil.copytree(MLSERVER_MODELS_DIR, repo, ignore=shutil.ignore_patterns("__pycache__"))
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        env = _base_env(venv)
        # settings.json holds everything but the ports, which pydantic-settings reads from MLSERVER_* variables.
        env.update(
            {
                "MLSERVER_HTTP_PORT": str(http_port),
                "MLSERVER_GRPC_PORT": str(grpc_port),
                "MLSERVER_METRICS_PORT": str(metrics_port),
                "PYTHONPATH": str(repo),
            }
        )
        cmd = [venv.python, "-c", _MLSERVER_MAIN, "start", repo]
        http_url = f"http://127.0.0.1:{http_port}"
        fields = {
            "models": MLSERVER_MODELS,
            "capabilities": MLSERVER_CAPABILITIES | {"fp16"},
            "datatypes": NUMPY_DATATYPES,
            "venv": venv,
            "info": {"fail_model": "fail"},
        }
        ready = [f"/v2/models/{m}/ready" for m in MLSERVER_MODELS] + ["/v2/health/ready"]
        return cmd, env, workdir, http_url, f"127.0.0.1:{grpc_port}", ready, fields

    return _launch("mlserver", make, timeout=timeout)


STARTERS = {"triton": start_triton, "kserve": start_kserve, "mlserver": start_mlserver}


def start_server(name: str, **kwargs: Any) -> Server:
    """Build (or reuse) the venv of server ``name`` and start it; use as a context manager to stop it."""
    try:
        starter = STARTERS[name]
    except KeyError:
        raise ValueError(f"unknown server {name!r}; expected one of {sorted(STARTERS)}") from None
    return starter(**kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tests.interop.harness [build|run] [server ...]``: build venvs, or start servers until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("action", choices=("build", "run"))
    parser.add_argument("servers", nargs="*", default=sorted(STARTERS))
    args = parser.parse_args(argv)
    if args.action == "build":
        for name in args.servers:
            venv = ensure_venv(name)
            state = "built" if venv.built else "cached"
            print(f"{name}: {venv.path} ({state}, build took {venv.build_seconds:.1f}s)", flush=True)
        return 0
    running = []
    try:
        for name in args.servers:
            server = start_server(name)
            running.append(server)
            print(
                f"{name}: {server.http_url} grpc {server.grpc_address} ready in {server.startup_seconds:.1f}s "
                f"(pid {server.pid}, log {server.log_path})",
                flush=True,
            )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    finally:
        for server in running:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
