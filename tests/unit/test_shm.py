"""inferkit.shm: region lifecycle, reading and writing, and cleanup that leaves nothing in /dev/shm."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from inferkit import shm
from inferkit.codec.tensors import InferInput, InferRequestedOutput
from inferkit.errors import EncodeError
from inferkit.shm import SharedMemoryError, SharedMemoryRegion

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs POSIX shared memory in /dev/shm")


def ours() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("inferkit_")}


@pytest.fixture(autouse=True)
def no_leak():
    before = ours()
    yield
    assert ours() - before == set(), "a test left a shared memory region behind"


def exists(region: SharedMemoryRegion) -> bool:
    return os.path.exists("/dev/shm" + region.key)


def test_create_write_read_and_unlink_on_exit_of_with():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([[1, -2]], dtype=np.int64)
    with SharedMemoryRegion(128, name="in0") as region:
        assert region.name == "in0" and region.key.startswith("/inferkit_") and region.owner and exists(region)
        assert os.stat("/dev/shm" + region.key).st_mode & 0o777 == 0o600
        assert region.set([a, b], offset=8) == [(8, 48), (56, 16)]
        view = region.as_numpy("FP32", [3, 4], offset=8)
        np.testing.assert_array_equal(view, a)
        np.testing.assert_array_equal(region.as_numpy(np.int64, [1, 2], offset=56), b)
        view[0, 0] = 42.0  # a writable view of the region itself
        assert region.as_numpy("FP32", [1], offset=8)[0] == 42.0
    assert not exists(region) and region.closed
    np.testing.assert_array_equal(view[1], a[1])  # the view keeps the mapping alive after close/unlink


def test_default_name_is_key_without_slash_and_custom_key():
    with SharedMemoryRegion(8, key="inferkit_custom_key_test") as region:
        assert region.key == "/inferkit_custom_key_test" and region.name == "inferkit_custom_key_test"
        with pytest.raises(SharedMemoryError, match="already exists"):
            SharedMemoryRegion(8, key=region.key)


def test_bytes_bf16_and_fp16_round_trip():
    words = np.array([b"a", b"", "h\u00e9"], dtype=object)
    with SharedMemoryRegion(64) as region:
        ((offset, size),) = region.set(words)
        assert size == 4 * 3 + 1 + 0 + 3
        assert list(region.as_numpy("BYTES", [3], offset)) == [b"a", b"", "h\u00e9".encode()]
        assert list(region.as_numpy("BYTES", [3], offset, byte_size=size)) == [b"a", b"", "h\u00e9".encode()]
        half = np.array([1.5, -2.0], dtype=np.float16)
        region.set(half, offset=32)
        np.testing.assert_array_equal(region.as_numpy("FP16", [2], 32), half)
        pytest.importorskip("ml_dtypes")
        bf = region.as_numpy("BF16", [2], 40)
        assert bf.dtype.name == "bfloat16"


def test_bounds_and_argument_errors():
    with SharedMemoryRegion(16) as region:
        with pytest.raises(SharedMemoryError, match="does not fit"):
            region.set([np.zeros(5, np.int32)])
        with pytest.raises(SharedMemoryError, match="runs past"):
            region.as_numpy("INT32", [2], offset=12)
        with pytest.raises(SharedMemoryError, match="offset"):
            region.as_numpy("INT32", [1], offset=17)
        with pytest.raises(SharedMemoryError, match="not a numpy array"):
            region.set([[1, 2]])
        assert isinstance(SharedMemoryError("x"), EncodeError)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(SharedMemoryError, match="positive integer"):
            SharedMemoryRegion(bad)
    with pytest.raises(SharedMemoryError, match="POSIX name"):
        SharedMemoryRegion(8, key="/a/b")
    with pytest.raises(SharedMemoryError, match="closed"):
        region.as_numpy("INT32", [1])


def test_attach_reads_the_same_memory_and_never_unlinks():
    with SharedMemoryRegion(32) as owner:
        owner.set(np.arange(8, dtype=np.int32))
        other = SharedMemoryRegion.attach(owner.key)
        assert not other.owner and other.byte_size == 32
        np.testing.assert_array_equal(other.as_numpy("INT32", [8]), np.arange(8))
        other.as_numpy("INT32", [1])[0] = 99
        assert owner.as_numpy("INT32", [1])[0] == 99
        with pytest.raises(SharedMemoryError, match="attached, not created"):
            other.unlink()
        with other:
            pass  # leaving the block closes the attached mapping; it must not unlink the owner's region
        assert exists(owner)
    with pytest.raises(SharedMemoryError, match="no shared memory region"):
        SharedMemoryRegion.attach(owner.key)


def test_close_then_unlink_are_idempotent_and_owned_keys_tracks_creations():
    region = SharedMemoryRegion(8)
    assert region.key in shm.owned_keys()
    region.close()
    region.close()
    assert exists(region)  # close only unmaps
    assert region.unlink() is True
    assert region.unlink() is False
    assert region.key not in shm.owned_keys() and not exists(region)


def test_unlink_all_removes_what_this_process_created():
    a, b = SharedMemoryRegion(8), SharedMemoryRegion(8)
    removed = shm.unlink_all()
    assert {a.key, b.key} <= set(removed) and not exists(a) and not exists(b)
    a.close()
    b.close()


def test_tensor_helpers_place_inputs_and_outputs():
    arr = np.arange(4, dtype=np.int32)
    with SharedMemoryRegion(64, name="r") as region:
        x = region.infer_input("INPUT0", arr, offset=16)
        assert x.shared_memory == ("r", 16, 16) and not x.has_data
        np.testing.assert_array_equal(region.as_numpy("INT32", [4], 16), arr)
        out = region.requested_output("OUTPUT0", offset=32)
        assert out.shared_memory == ("r", 32, 32)
        assert region.requested_output("OUTPUT1").parameters == {
            "shared_memory_region": "r",
            "shared_memory_byte_size": 64,
        }


def test_infer_input_shm_parameters_and_switching_back_to_data():
    x = InferInput("X", [2, 2], "FP32").set_data_from_numpy(np.ones((2, 2), np.float32))
    x.set_shared_memory("r", 16, offset=4)
    assert x.parameters == {"shared_memory_region": "r", "shared_memory_byte_size": 16, "shared_memory_offset": 4}
    assert not x.has_data
    with pytest.raises(EncodeError, match="read it from the region"):
        x.as_numpy()
    with pytest.raises(EncodeError, match="does not match shape"):
        x.set_shared_memory("r", 15)
    x.set_data_from_numpy(np.zeros((2, 2), np.float32))
    assert x.shared_memory is None and x.parameters == {}
    o = InferRequestedOutput("Y").set_shared_memory("r", 8)
    assert o.shared_memory == ("r", 8, 0)
    assert o.unset_shared_memory().parameters == {}
    for bad in (("", 8), ("r", -1)):
        with pytest.raises(EncodeError):
            InferRequestedOutput("Y").set_shared_memory(*bad)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=root, capture_output=True, text=True, timeout=60
    )


def test_regions_are_unlinked_at_interpreter_exit_even_without_close():
    result = _run(
        """
        from inferkit.shm import SharedMemoryRegion
        kept = SharedMemoryRegion(64)
        SharedMemoryRegion(64)  # dropped at once, never closed
        print(kept.key)
        raise SystemExit(3)
        """
    )
    assert result.returncode == 3, result.stderr
    assert not os.path.exists("/dev/shm" + result.stdout.strip())


def test_attaching_process_exit_does_not_unlink_and_no_tracker_process_starts():
    with SharedMemoryRegion(16) as region:
        result = _run(
            f"""
            import multiprocessing.resource_tracker as rt
            from inferkit.shm import SharedMemoryRegion
            r = SharedMemoryRegion.attach({region.key!r})
            r.as_numpy("INT32", [1])[0] = 7
            print(rt._resource_tracker._pid)
            """
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "None"  # no resource tracker was started
        assert exists(region) and region.as_numpy("INT32", [1])[0] == 7


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_unlink_parent_regions():
    with SharedMemoryRegion(16) as region:
        result = _run(
            """
            import os
            from inferkit.shm import SharedMemoryRegion
            region = SharedMemoryRegion(16)
            pid = os.fork()
            if pid == 0:
                os._exit(0 if region.key not in __import__("inferkit.shm").shm.owned_keys() else 1)
            _, status = os.waitpid(pid, 0)
            # a child that exits through atexit must not unlink either
            pid = os.fork()
            if pid == 0:
                raise SystemExit(0)
            os.waitpid(pid, 0)
            print(os.path.exists("/dev/shm" + region.key), os.waitstatus_to_exitcode(status), region.key)
            """
        )
        assert result.returncode == 0, result.stderr
        alive, child_status, key = result.stdout.split()
        assert alive == "True" and child_status == "0"
        assert not os.path.exists("/dev/shm" + key)  # the parent unlinked it at its own exit
        assert exists(region)
