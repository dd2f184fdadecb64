"""Sync batch jobs (``infer_many``, ``infer_batched``, hedging) through the real REST and gRPC clients against the
reference server over 127.0.0.1, plus the pure scheduler rules."""

from __future__ import annotations

import io
import itertools
import pickle
import sys
import threading
from typing import Any, Iterator

import numpy as np
import pytest

from inferkit import InferRequest, RESTConfig
from inferkit.batching import BatchMixin, HedgePolicy, ItemError, RebuildOnUnpickle, _Scheduler, split_batches
from inferkit.errors import EncodeError, InvalidInputError
from inferkit.rest_client import InferenceRESTClient
from tests.transport._batch_support import BatchServer, CountingSource, batch_threads, probe_request, value_of

grpc_client = pytest.importorskip("inferkit.grpc_client")


RESTClient = InferenceRESTClient
GRPCClient = grpc_client.InferenceGRPCClient


def test_sync_clients_have_batching_and_pickling() -> None:
    for cls in (RESTClient, GRPCClient):
        assert issubclass(cls, BatchMixin) and issubclass(cls, RebuildOnUnpickle), cls


@pytest.fixture(params=["rest", "grpc"])
def client(request: pytest.FixtureRequest, batch_server: BatchServer) -> Iterator[Any]:
    if request.param == "rest":
        c = RESTClient(batch_server.server.http_url, RESTConfig(retries=0, timeout=10))
    else:
        c = GRPCClient(batch_server.server.grpc_url, retries=0, timeout=10)
    with c:
        yield c
    assert batch_threads() == []


# -- ordering ----------------------------------------------------------------------------------------------------
def test_ordered_results_follow_the_input_order(client: Any, bs: BatchServer) -> None:
    requests = [probe_request(i, jitter=0.002) for i in range(60)]
    results = list(client.infer_many(requests, concurrency=8))
    assert [value_of(r) for r in results] == [2 * i for i in range(60)]


def test_unordered_yields_index_pairs_for_every_request(client: Any, bs: BatchServer) -> None:
    pairs = list(client.infer_many((probe_request(i, jitter=0.002) for i in range(40)), concurrency=8, ordered=False))
    assert sorted(index for index, _ in pairs) == list(range(40))
    assert all(value_of(response) == 2 * index for index, response in pairs)


def test_empty_input_yields_nothing(client: Any, bs: BatchServer) -> None:
    assert list(client.infer_many([])) == []
    assert bs.server.count(route="infer") == 0


# -- bounds ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("concurrency", [1, 4])
def test_in_flight_count_is_bounded_server_side(client: Any, bs: BatchServer, concurrency: int) -> None:
    requests = (probe_request(i, delay=0.01) for i in range(6 * concurrency))
    assert len(list(client.infer_many(requests, concurrency=concurrency))) == 6 * concurrency
    assert bs.probe.max_seen <= concurrency
    if concurrency > 1:
        assert bs.probe.max_seen >= 2  # it did run requests side by side
    assert bs.probe.calls == 6 * concurrency


def test_an_endless_generator_is_pulled_lazily(client: Any, bs: BatchServer) -> None:
    source = CountingSource()
    concurrency = 4
    with client.infer_many(source, concurrency=concurrency) as results:
        first = [value_of(r) for r in itertools.islice(results, 25)]
        assert first == [2 * i for i in range(25)]
        assert source.pulled <= 25 + 2 * concurrency
    pulled = source.pulled
    assert batch_threads() == []
    sent = bs.server.count(route="infer", model="probe")
    assert 25 <= sent <= pulled  # pulled requests not yet started when it closed are dropped, not sent
    assert source.pulled == pulled


def test_breaking_out_stops_submitting_and_joins_the_threads(client: Any, bs: BatchServer) -> None:
    source = CountingSource(delay=0.005)
    for i, _response in enumerate(client.infer_many(source, concurrency=4)):
        if i == 5:
            break
    # The generator was closed by the for loop: no worker thread is left and nothing more is pulled or sent.
    assert batch_threads() == []
    sent = bs.server.count(route="infer", model="probe")
    assert 6 <= sent <= source.pulled <= 6 + 8


def test_ordered_reorder_buffer_is_bounded_behind_a_slow_head(bs: BatchServer, client: Any) -> None:
    # Request 0 is slow (released by the test); the others are fast. The iterator may hold at most
    # 2 * concurrency requests, so it stops pulling while it waits for the head.
    concurrency = 3
    source = CountingSource()
    requests = itertools.chain([_hedge_request(1000)], source)
    timer = threading.Timer(0.3, bs.hedge.release.set)
    timer.start()
    try:
        results = client.infer_many(requests, concurrency=concurrency)
        head = next(results)
        assert int(head.as_numpy("OUTPUT0")[0]) == 1000
        assert source.pulled <= 2 * concurrency
        results.close()
    finally:
        timer.cancel()


# -- errors ------------------------------------------------------------------------------------------------------
def test_return_exceptions_yields_item_errors_in_place(client: Any, bs: BatchServer) -> None:
    values = [3, -1, 4, -1, 5, 9, -2]
    results = list(client.infer_many([probe_request(v) for v in values], concurrency=3, return_exceptions=True))
    for index, (value, result) in enumerate(zip(values, results)):
        if value < 0:
            assert isinstance(result, ItemError) and not result
            assert result.index == index
            assert isinstance(result.exception, InvalidInputError)
            assert isinstance(result.request, InferRequest)
            assert int(result.request.as_numpy("INPUT0")[0]) == value
        else:
            assert value_of(result) == 2 * value


def test_return_exceptions_unordered_pairs_carry_the_index(client: Any, bs: BatchServer) -> None:
    values = [1, -1, 2, -3]
    pairs = dict(
        client.infer_many([probe_request(v) for v in values], ordered=False, return_exceptions=True, concurrency=2)
    )
    assert sorted(pairs) == [0, 1, 2, 3]
    assert pairs[1].index == 1 and pairs[3].index == 3
    assert value_of(pairs[2]) == 4


def test_first_failure_is_raised_with_its_index_and_stops_the_rest(client: Any, bs: BatchServer) -> None:
    def requests() -> Iterator[InferRequest]:
        for i in itertools.count():
            yield probe_request(-1 if i == 7 else i, delay=0.002)

    received = []
    with pytest.raises(InvalidInputError) as info:
        for response in client.infer_many(requests(), concurrency=4):
            received.append(value_of(response))
    assert info.value.index == 7
    if sys.version_info >= (3, 11):
        assert any("#7" in note for note in info.value.__notes__)
    assert received == [2 * i for i in range(len(received))] and len(received) <= 7
    assert batch_threads() == []
    assert bs.server.count(route="infer", model="probe") <= 8 + 2 * 4


def test_an_error_in_the_source_propagates_and_cleans_up(client: Any, bs: BatchServer) -> None:
    def requests() -> Iterator[InferRequest]:
        yield probe_request(1)
        raise LookupError("source broke")

    with pytest.raises(LookupError, match="source broke"):
        list(client.infer_many(requests()))
    assert batch_threads() == []


def test_bad_arguments_fail_at_the_call(client: Any) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        client.infer_many([], concurrency=0)
    with pytest.raises(ValueError, match="hedge_after"):
        client.infer_many([], hedge_after=0)
    with pytest.raises(ValueError, match="hedge_budget"):
        client.infer_many([], hedge_after=1, hedge_budget=-1)


# -- progress ----------------------------------------------------------------------------------------------------
def test_progress_bar(client: Any, bs: BatchServer, monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert len(list(client.infer_many([probe_request(i) for i in range(5)], progress=True))) == 5
    assert "5/5" in err.getvalue()


def test_progress_without_tqdm_names_the_extra(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"inferkit\[progress\]"):
        list(client.infer_many([probe_request(1)], progress=True))


# -- infer_batched ------------------------------------------------------------------------------------------------
def test_infer_batched_stitches_outputs_in_order(client: Any, bs: BatchServer) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(-1000, 1000, size=(203, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, size=(203, 16), dtype=np.int32)
    out = client.infer_batched("add_sub", {"INPUT0": a, "INPUT1": b}, batch_size=16, concurrency=4)
    assert sorted(out) == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)
    assert bs.server.count(route="infer", model="add_sub") == 13  # ceil(203 / 16)
    only = client.infer_batched("add_sub", {"INPUT0": a, "INPUT1": b}, batch_size=100, outputs=["OUTPUT1"])
    assert list(only) == ["OUTPUT1"]
    np.testing.assert_array_equal(only["OUTPUT1"], a - b)


def test_infer_batched_single_batch_and_zero_rows(client: Any, bs: BatchServer) -> None:
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    out = client.infer_batched("add_sub", {"INPUT0": a, "INPUT1": a}, batch_size=64)
    np.testing.assert_array_equal(out["OUTPUT0"], 2 * a)
    assert out["OUTPUT0"].flags.writeable  # a copy the caller owns, not a view of a reply body
    empty = np.zeros((0, 16), dtype=np.int32)
    assert client.infer_batched("add_sub", {"INPUT0": empty, "INPUT1": empty}, batch_size=8) == {}
    assert bs.server.count(route="infer", model="add_sub") == 1


def test_infer_batched_validates_alignment_before_sending(client: Any, bs: BatchServer) -> None:
    a = np.zeros((10, 16), dtype=np.int32)
    with pytest.raises(EncodeError, match=r"'add_sub'.*'INPUT0' has 10 rows but 'INPUT1' has 9"):
        client.infer_batched("add_sub", {"INPUT0": a, "INPUT1": a[:9]}, batch_size=4)
    with pytest.raises(EncodeError, match="scalar"):
        client.infer_batched("add_sub", {"INPUT0": np.int32(1)}, batch_size=4)
    with pytest.raises(EncodeError, match="batch_size"):
        client.infer_batched("add_sub", {"INPUT0": a}, batch_size=0)
    with pytest.raises(EncodeError, match="not inputs"):
        client.infer_batched("add_sub", {"INPUT0": a}, batch_size=2, datatypes={"NOPE": "FP32"})
    assert bs.server.count(route="infer") == 0


def test_infer_batched_reports_the_failed_batch_and_its_rows(client: Any, bs: BatchServer) -> None:
    x = np.arange(40, dtype=np.int64)
    x[33] = -5
    with pytest.raises(InvalidInputError) as info:
        client.infer_batched("probe", {"INPUT0": x}, batch_size=10, concurrency=2)
    assert info.value.index == 3
    if sys.version_info >= (3, 11):
        assert any("rows 30:40" in note for note in info.value.__notes__)


def test_split_batches_sends_views_not_copies() -> None:
    x = np.arange(10, dtype=np.float32)
    requests = list(split_batches("m", {"x": x}, batch_size=4, parameters={"p": 1}))
    assert [r.inputs[0].shape for r in requests] == [[4], [4], [2]]
    assert all(r.parameters == {"p": 1} for r in requests)
    assert np.shares_memory(requests[1].inputs[0].as_numpy(), x)


# -- hedging -----------------------------------------------------------------------------------------------------
def _hedge_request(value: int, **parameters: Any) -> InferRequest:
    request = probe_request(value, **parameters)
    request.model_name = "hedge"
    return request


def test_hedged_copy_wins_when_the_first_is_slow(client: Any, bs: BatchServer) -> None:
    results = client.infer_many([_hedge_request(7)], hedge_after=0.05, hedge_budget=1.0)
    first = next(results)
    bs.hedge.release.set()  # let the losing copy finish so the iterator can join its thread
    assert list(results) == []
    assert int(first.as_numpy("OUTPUT0")[0]) == 7
    assert int(first.as_numpy("ATTEMPT")[0]) == 2  # the answer came from the second copy
    assert bs.server.count(route="infer", model="hedge") == 2


def test_the_losing_copy_is_cancelled_not_awaited(client: Any, bs: BatchServer) -> None:
    results = list(
        client.infer_many([_hedge_request(8), _hedge_request(9, fast=True)], hedge_after=0.05, hedge_budget=1.0)
    )
    # infer_many has ended, and every thread of it been joined, while the first copy of request 8 still waits in
    # the server: the client cancelled that copy instead of waiting for it (a worker thread would still be
    # blocked on it; REST: its connection was closed, gRPC: the call cancelled).
    with bs.hedge.lock:
        assert 8 in bs.hedge.waiting
    assert batch_threads() == []
    bs.hedge.release.set()
    assert [int(r.as_numpy("ATTEMPT")[0]) for r in results] == [2, 1]
    assert bs.server.count(route="infer", model="hedge") == 3


def test_fast_requests_are_never_hedged(client: Any, bs: BatchServer) -> None:
    requests = [_hedge_request(i, fast=True) for i in range(20)]
    results = list(client.infer_many(requests, hedge_after=2.0, hedge_budget=1.0))
    assert [int(r.as_numpy("ATTEMPT")[0]) for r in results] == [1] * 20
    assert bs.server.count(route="infer", model="hedge") == 20


def test_hedging_respects_the_budget(client: Any, bs: BatchServer) -> None:
    timer = threading.Timer(0.3, bs.hedge.release.set)
    timer.start()
    try:
        results = list(client.infer_many([_hedge_request(1)], hedge_after=0.02, hedge_budget=0.0))
    finally:
        timer.cancel()
    assert int(results[0].as_numpy("ATTEMPT")[0]) == 1
    assert bs.server.count(route="infer", model="hedge") == 1


# -- the scheduler's rules (no I/O) ------------------------------------------------------------------------------
def test_scheduler_hedge_budget_and_slots() -> None:
    sched = _Scheduler(concurrency=2, ordered=True, hedge=HedgePolicy(after=1.0, budget=0.5))
    a = sched.add("a", now=0.0)
    b = sched.add("b", now=0.0)
    assert not sched.can_pull()
    assert sched.due_hedge(5.0) is None  # no free slot
    assert sched.next_hedge_deadline() is None
    sched.complete(b, True, "B")
    assert sched.next_hedge_deadline() == 1.0
    assert sched.due_hedge(0.5) is None  # not yet
    assert sched.due_hedge(1.5) == (a, "a")  # 1 hedge <= 0.5 * 2 requests
    assert sched.in_flight == 2
    sched.complete(a, False, RuntimeError("first copy"))  # the other copy is still running: not resolved
    assert not sched.is_resolved(a)
    sched.complete(a, True, "A")
    assert [sched.next_ready(), sched.next_ready()] == [(0, True, "A", None), (1, True, "B", None)]
    c = sched.add("c", now=2.0)
    assert sched.due_hedge(10.0) is None  # over budget: 2 hedges > 0.5 * 3 requests
    sched.complete(c, False, ValueError("x"))
    assert sched.failure is not None and sched.failure[0] == c
    sched.exhausted = True
    assert sched.next_ready()[1] is False  # type: ignore[index]
    assert sched.finished


def test_scheduler_window_blocks_pulling_behind_a_slow_head() -> None:
    sched = _Scheduler(concurrency=2, ordered=True)
    head = sched.add(0)
    for _ in range(3):
        sched.complete(sched.add(1), True, 1)
    assert sched.pulled == 4 and sched.in_flight == 1
    assert not sched.can_pull()  # 4 held = 2 * concurrency
    sched.complete(head, True, 0)
    assert [sched.next_ready()[2] for _ in range(4)] == [0, 1, 1, 1]  # type: ignore[index]
    assert sched.can_pull()


# -- pickling ----------------------------------------------------------------------------------------------------
# The shipped clients declare RebuildOnUnpickle themselves: pickling is tested on them directly.
PicklableGRPC = GRPCClient
PicklableREST = RESTClient


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_rebuild_on_unpickle_makes_a_new_working_client(batch_server: BatchServer, transport: str) -> None:
    if transport == "rest":
        config = RESTConfig(retries=0, headers={"x-job": "pickled"})
        original: Any = PicklableREST(batch_server.server.http_url, config=config)
    else:
        original = PicklableGRPC(batch_server.server.grpc_url, retries=0, timeout=10)
    try:
        copy = pickle.loads(pickle.dumps(original))
    finally:
        original.close()
    with copy:
        assert type(copy) is type(original) and copy is not original
        assert value_of(copy.infer(probe_request(4))) == 8
        if transport == "rest":
            assert copy.config == config


def test_the_input_is_pulled_on_the_consumers_thread_only(client: Any, bs: BatchServer) -> None:
    # An iterator tied to its thread (a sqlite3 cursor, a thread-local session) must keep working.
    pulled_on: set[int] = set()
    started: list[int] = []

    def source() -> Iterator[InferRequest]:
        for i in range(40):
            pulled_on.add(threading.get_ident())
            started.append(len(batch_threads()))
            yield probe_request(i, jitter=0.002)

    assert [value_of(r) for r in client.infer_many(source(), concurrency=8)] == [2 * i for i in range(40)]
    assert pulled_on == {threading.get_ident()}
    assert max(started) <= 8  # one worker thread per slot at most


def test_few_requests_start_few_threads(client: Any, bs: BatchServer) -> None:
    seen: list[int] = []

    def infer(request: InferRequest, **kwargs: Any) -> Any:
        seen.append(len(batch_threads()))
        return client.infer(request, **kwargs)

    from inferkit.batching import infer_many

    assert len(list(infer_many(infer, [probe_request(i) for i in range(3)], concurrency=32))) == 3
    assert max(seen) <= 3


# -- gRPC: requests started without a thread each ------------------------------------------------------------------
@pytest.fixture
def grpc_c(batch_server: BatchServer) -> Iterator[Any]:
    from inferkit.config import RetryPolicy

    policy = RetryPolicy(max_retries=2, backoff_initial=0.01, jitter=0)
    with GRPCClient(batch_server.server.grpc_url, retry=policy, timeout=10) as c:
        yield c
    assert batch_threads() == []


def test_grpc_infer_many_runs_without_a_thread_per_request(grpc_c: Any, bs: BatchServer) -> None:
    threads_seen: list[int] = []

    def source() -> Iterator[InferRequest]:
        for i in range(60):
            threads_seen.append(len(batch_threads()))
            yield probe_request(i, jitter=0.002)

    results = list(grpc_c.infer_many(source(), concurrency=8))
    assert [value_of(r) for r in results] == [2 * i for i in range(60)]
    assert max(threads_seen) == 0  # gRPC's own thread completes the calls and starts the next ones
    assert 2 <= bs.probe.max_seen <= 8


def test_grpc_infer_many_retries_a_failed_call_under_the_policy(grpc_c: Any, bs: BatchServer) -> None:
    from inferkit.testing import Fault

    bs.server.inject(Fault(route="infer", model="probe", action="grpc_status", code="UNAVAILABLE", times=3))
    results = list(grpc_c.infer_many([probe_request(i) for i in range(20)], concurrency=4))
    assert [value_of(r) for r in results] == [2 * i for i in range(20)]
    assert bs.server.count(route="infer", model="probe") == 23  # three failed attempts, each retried once


def test_grpc_infer_many_reports_every_kind_of_failure_in_place(grpc_c: Any, bs: BatchServer) -> None:
    from inferkit.errors import ServiceUnavailableError
    from inferkit.testing import Fault

    bs.server.inject(Fault(route="infer", model="probe", action="grpc_status", code="UNAVAILABLE", times=None))
    requests: list[Any] = [probe_request(0), "not a request", probe_request(2)]
    got = list(grpc_c.infer_many(requests, concurrency=2, return_exceptions=True))
    assert [type(item.exception) for item in got] == [ServiceUnavailableError, TypeError, ServiceUnavailableError]
    assert [item.index for item in got] == [0, 1, 2]
    assert bs.server.count(route="infer", model="probe") == 2 * 3  # each real request: 1 attempt + 2 retries


def test_grpc_infer_many_leaving_early_cancels_the_calls_in_flight(grpc_c: Any, bs: BatchServer) -> None:
    requests = [probe_request(0)] + [probe_request(i, delay=5.0) for i in range(1, 8)]
    with grpc_c.infer_many(requests, concurrency=8, ordered=False) as results:
        index, first = next(results)
        assert index == 0 and value_of(first) == 0
    # Closed without waiting for the slow calls: they were cancelled (a blocking call could not be).
    assert batch_threads() == []
    assert grpc_c.infer(probe_request(3)) is not None  # the client is fine


def test_grpc_infer_many_with_a_verbose_client(batch_server: BatchServer, bs: BatchServer) -> None:
    with GRPCClient(batch_server.server.grpc_url, verbose=True, retries=0, timeout=10) as c:
        assert [value_of(r) for r in c.infer_many([probe_request(i) for i in range(10)], concurrency=3)] == [
            2 * i for i in range(10)
        ]
    assert batch_threads() == []


def test_unordered_hands_out_an_answer_while_slower_ones_still_run(client: Any, bs: BatchServer) -> None:
    # Answers are handed out in batches, but none waits for the slow requests of its batch.
    requests = [probe_request(0)] + [probe_request(i, delay=1.0) for i in range(1, 6)]
    with client.infer_many(requests, concurrency=6, ordered=False) as results:
        index, first = next(results)
        with bs.probe.lock:
            finished = bs.probe.calls - bs.probe.current
        assert index == 0 and value_of(first) == 0
        # None of the five slow ones had finished in the server (on a loaded machine some may not even have
        # reached the model yet, so what is counted is the finished ones, not the running ones).
        assert finished == 1
        assert sorted(i for i, _ in results) == [1, 2, 3, 4, 5]


def test_grpc_infer_many_on_a_client_closed_meanwhile_reports_every_item(batch_server: BatchServer) -> None:
    c = GRPCClient(batch_server.server.grpc_url, retries=0, timeout=10)
    c.close()
    got = list(c.infer_many([probe_request(i) for i in range(5)], concurrency=2, return_exceptions=True))
    assert [item.index for item in got] == [0, 1, 2, 3, 4]
    assert all("closed" in str(item.exception) for item in got)
    assert batch_threads() == []
