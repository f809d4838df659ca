"""The embedding worker encodes queued slices most urgent first, in batches, and reports every outcome
through the slice's future.

A fake model stands in for the encoder: slice ``n`` of a test volume is filled with the value ``n``,
``prepare`` carries that value into the model input, and ``encode`` records which slices it was given
(in order, per call), can be held on an event so the test controls timing, and returns embeddings
filled with the slice's value. So the order of encoding and the embedding each future gets are
observable exactly.
"""

import threading
import time

import numpy as np
import pytest

from MedSAMSlicerLib.models.device import CPU
from MedSAMSlicerLib.models.slice_model import SliceModel
from MedSAMSlicerLib.volume.embedding_cache import EMBEDDING_SHAPE, EmbeddingCache, image_identity
from MedSAMSlicerLib.volume.embedding_worker import EmbeddingWorker
from MedSAMSlicerLib.volume.slice_source import SliceSource

TIMEOUT = 10  # seconds; only reached when something is broken


class FakeModel(SliceModel):
    input_size = 4

    def __init__(self):
        super().__init__("fake", None, CPU, "f00d" * 16)  # never built: encode is faked
        self.calls = []  # slice values per encode call, in call order
        self.entered = threading.Event()  # set when encode starts
        self.gate = threading.Event()  # encode waits on it
        self.gate.set()
        self.fail = set()  # encode raises when its batch holds one of these slice values

    def prepare(self, slice_u8: np.ndarray) -> np.ndarray:
        return np.full((3, self.input_size, self.input_size), float(slice_u8.flat[0]), dtype=np.float32)

    def content_shape(self, slice_shape):
        return slice_shape

    def model_coords(self, coords, slice_shape):
        return coords

    def probabilities(self, logits, slice_shape):
        raise NotImplementedError

    def encode(self, batch: np.ndarray) -> np.ndarray:
        values = [int(round(float(item[0, 0, 0]))) for item in batch]
        self.calls.append(values)
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise RuntimeError("test gate never opened")
        if self.fail & set(values):
            raise RuntimeError(f"encoder failed on slices {values}")
        return np.stack([embedding(value) for value in values])

    def hold(self):
        """Make the next encode wait until ``release``."""
        self.entered.clear()
        self.gate.clear()

    def wait_entered(self):
        assert self.entered.wait(TIMEOUT), "the worker never started encoding"

    def release(self):
        self.gate.set()

    @property
    def order(self):
        return [value for call in self.calls for value in call]


def make_source(count: int = 20, offset: int = 0, name: str = "p") -> SliceSource:
    """A volume ``[k, j, i]`` whose slice ``n`` along K (axis 2) is filled with ``n + offset``."""
    volume = (np.arange(count, dtype=np.uint8)[:, None, None] + offset) * np.ones((1, 3, 5), dtype=np.uint8)
    return SliceSource(volume, 2, image_identity(volume), name)


def embedding(value: float) -> np.ndarray:
    return np.full(EMBEDDING_SHAPE, float(value), dtype=np.float32)


def results(futures, timeout=TIMEOUT):
    return {index: future.result(timeout=timeout) for index, future in futures.items()}


@pytest.fixture
def model():
    return FakeModel()


@pytest.fixture
def cache():
    return EmbeddingCache()


@pytest.fixture
def make_worker(model, cache):
    made = []

    def make(**options):
        worker = EmbeddingWorker(model, cache, **options)
        made.append(worker)
        return worker

    yield make
    model.release()
    for worker in made:
        closer = threading.Thread(target=worker.close, daemon=True)
        closer.start()
        closer.join(TIMEOUT)


def start_blocked(worker: EmbeddingWorker, model: FakeModel, source: SliceSource, index: int = 0):
    """Have the worker encode ``index`` and hold it there; returns that slice's future."""
    model.hold()
    future = worker.request(source, [index], priority=-100)[index]
    model.wait_entered()
    return future


# --- results ---------------------------------------------------------------------------------------

def test_futures_resolve_to_each_slices_embedding_and_the_cache_then_holds_them(model, cache, make_worker):
    source = make_source()
    worker = make_worker()
    assert worker.batch_size == 1  # the default on the CPU
    futures = worker.request(source, [3, 1, 4])
    assert set(futures) == {3, 1, 4}
    for index, value in results(futures).items():
        assert np.array_equal(value, embedding(index))
        assert np.array_equal(cache.get(source.key(index, model.cache_id)), embedding(index))
    assert model.calls == [[3], [1], [4]]  # equal priorities: first come, first served
    assert worker.queued == 0


def test_each_source_has_its_own_keys(model, cache, make_worker):
    first, second = make_source(offset=0, name="a"), make_source(offset=100, name="b")
    worker = make_worker()
    a = worker.request(first, [2])[2]
    b = worker.request(second, [2])[2]
    assert np.array_equal(a.result(TIMEOUT), embedding(2))
    assert np.array_equal(b.result(TIMEOUT), embedding(102))
    assert np.array_equal(cache.get(second.key(2, model.cache_id)), embedding(102))
    assert sorted(model.order) == [2, 102]


def test_a_slice_asked_for_twice_is_encoded_once(model, make_worker):
    source = make_source()
    worker = make_worker()
    start_blocked(worker, model, source)
    first = worker.request(source, [5, 5, 6])
    second = worker.request(source, [5])
    assert second[5] is first[5]
    model.release()
    results(first)
    assert model.order == [0, 5, 6]


def test_a_cached_slice_is_already_done_without_an_encode(model, cache, make_worker):
    source = make_source()
    cache.put(source.key(7, model.cache_id), embedding(70))  # not what the encoder would give: proves no encode
    worker = make_worker()
    future = worker.request(source, [7])[7]
    assert future.done()
    assert np.array_equal(future.result(0), embedding(70))
    assert model.calls == []

    assert np.array_equal(worker.request(source, [2])[2].result(TIMEOUT), embedding(2))
    again = worker.request(source, [2])[2]
    assert again.done() and np.array_equal(again.result(0), embedding(2))
    assert model.calls == [[2]]


# --- priorities --------------------------------------------------------------------------------------

def test_slices_are_encoded_most_urgent_first(model, make_worker):
    source = make_source()
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    futures = {}
    for index, priority in [(1, 5), (2, 1), (3, 3), (4, 0), (5, 3), (6, -2), (7, 10)]:
        futures.update(worker.request(source, [index], priority=priority))
    futures.update(worker.request(source, [9, 8], priority=2))  # one request, same priority: in the given order
    assert worker.queued == 9
    model.release()
    for index, value in results(futures).items():
        assert np.array_equal(value, embedding(index))
    assert model.order == [0, 6, 4, 2, 9, 8, 3, 5, 1, 7]


def test_prioritise_moves_queued_slices_and_ignores_others(model, cache, make_worker):
    source = make_source()
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    futures = worker.request(source, [1, 2, 3, 4], priority=10)
    worker.prioritise(source, {3: 0, 1: 20, 12: -5})  # 3 sooner, 1 later, 12 is not queued
    assert worker.queued == 4
    model.release()
    results(futures)
    assert model.order == [0, 3, 2, 4, 1]
    assert cache.get(source.key(12, model.cache_id)) is None


def test_prioritise_of_another_source_does_not_touch_this_one(model, make_worker):
    source, other = make_source(name="a"), make_source(offset=50, name="b")
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    futures = worker.request(source, [1, 2], priority=10)
    worker.prioritise(other, {2: 0})
    model.release()
    results(futures)
    assert model.order == [0, 1, 2]


def test_requesting_a_queued_slice_more_urgently_moves_it_less_urgently_does_not(model, make_worker):
    source = make_source()
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    futures = worker.request(source, [1, 2, 3], priority=5)
    sooner = worker.request(source, [3], priority=1)
    later = worker.request(source, [1], priority=9)
    assert sooner[3] is futures[3] and later[1] is futures[1]
    assert worker.queued == 3
    model.release()
    results(futures)
    assert model.order == [0, 3, 1, 2]


# --- batching ------------------------------------------------------------------------------------------

def test_batch_size_groups_slices_per_encode_call(model, cache, make_worker):
    source = make_source()
    worker = make_worker(batch_size=4)
    futures = worker.request(source, range(10))
    for index, value in results(futures).items():
        assert np.array_equal(value, embedding(index))
        assert np.array_equal(cache.get(source.key(index, model.cache_id)), embedding(index))
    assert model.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_batch_takes_the_most_urgent_slices(model, make_worker):
    source = make_source()
    worker = make_worker(batch_size=3)
    start_blocked(worker, model, source, 0)
    futures = worker.request(source, [1, 2, 3, 4, 5, 6], priority=5)
    futures.update(worker.request(source, [7, 8], priority=1))
    model.release()
    results(futures)
    assert model.calls == [[0], [7, 8, 1], [2, 3, 4], [5, 6]]


# --- cancelling -------------------------------------------------------------------------------------------

def test_cancel_drops_queued_slices_and_the_batch_in_progress_completes(model, cache, make_worker):
    source = make_source()
    worker = make_worker(batch_size=2)
    model.hold()
    futures = worker.request(source, range(6))
    model.wait_entered()
    assert worker.cancel() == 4
    assert worker.queued == 0
    for index in range(2, 6):
        assert futures[index].cancelled()
    model.release()
    assert np.array_equal(futures[0].result(TIMEOUT), embedding(0))
    assert np.array_equal(futures[1].result(TIMEOUT), embedding(1))
    assert not futures[0].cancelled() and not futures[1].cancelled()
    assert cache.get(source.key(0, model.cache_id)) is not None

    # the worker goes on with what is asked next; the cancelled slices were never encoded
    assert np.array_equal(worker.request(source, [9])[9].result(TIMEOUT), embedding(9))
    assert model.calls == [[0, 1], [9]]
    for index in range(2, 6):
        assert cache.get(source.key(index, model.cache_id)) is None


def test_cancel_of_one_source_keeps_the_others_slices(model, make_worker):
    source, other = make_source(name="a"), make_source(offset=100, name="b")
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    mine = worker.request(source, [1, 2])
    theirs = worker.request(other, [1, 2])
    assert worker.cancel(source) == 2
    assert all(future.cancelled() for future in mine.values())
    model.release()
    for index, value in results(theirs).items():
        assert np.array_equal(value, embedding(100 + index))
    assert model.order == [0, 101, 102]


def test_a_cancelled_slice_can_be_requested_again(model, make_worker):
    source = make_source()
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    old = worker.request(source, [3])[3]
    worker.cancel()
    new = worker.request(source, [3])[3]
    assert old.cancelled() and new is not old
    model.release()
    assert np.array_equal(new.result(TIMEOUT), embedding(3))


def test_a_future_cancelled_by_its_caller_does_not_leave_the_slice_stuck(model, make_worker):
    """``Future.cancel()`` is public; after it the slice must not stay 'queued' forever, and asking for
    it again must encode it."""
    source = make_source()
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    dropped = worker.request(source, [1])[1]
    after = worker.request(source, [2], priority=1)[2]
    assert dropped.cancel()
    model.release()
    assert np.array_equal(after.result(TIMEOUT), embedding(2))  # the worker has gone past slice 1
    assert worker.queued == 0
    again = worker.request(source, [1])[1]
    assert not again.cancelled()
    assert np.array_equal(again.result(TIMEOUT), embedding(1))


def test_a_caller_cancelled_slice_requested_again_more_urgently_does_not_kill_the_worker(model, make_worker):
    source = make_source()
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    dropped = worker.request(source, [1], priority=5)[1]
    after = worker.request(source, [2], priority=6)[2]
    assert dropped.cancel()
    model.release()
    after.result(TIMEOUT)
    worker.request(source, [1], priority=0)  # more urgent than the cancelled request
    later = worker.request(source, [4], priority=1)[4]
    deadline = time.monotonic() + TIMEOUT
    while not later.done() and worker._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker._thread.is_alive(), "the worker thread died"
    assert np.array_equal(later.result(TIMEOUT), embedding(4))


# --- errors and progress ---------------------------------------------------------------------------------

def test_an_encoder_error_reaches_every_future_of_its_batch_and_the_worker_goes_on(model, cache, make_worker):
    source = make_source()
    errors = []
    reported = threading.Event()

    def on_error(error):
        errors.append(error)
        reported.set()

    model.fail = {2}
    worker = make_worker(batch_size=2, on_error=on_error)
    futures = worker.request(source, range(6))
    for index in (0, 1, 4, 5):
        assert np.array_equal(futures[index].result(TIMEOUT), embedding(index))
    failure = futures[2].exception(TIMEOUT)
    assert isinstance(failure, RuntimeError) and "encoder failed on slices [2, 3]" in str(failure)
    assert futures[3].exception(TIMEOUT) is failure
    with pytest.raises(RuntimeError, match="encoder failed"):
        futures[3].result(0)
    assert reported.wait(TIMEOUT)
    assert errors == [failure]
    assert model.calls == [[0, 1], [2, 3], [4, 5]]
    assert cache.get(source.key(2, model.cache_id)) is None
    assert cache.get(source.key(3, model.cache_id)) is None

    # the failed slices are not stuck: asked again, they are encoded
    model.fail = set()
    again = worker.request(source, [2, 3])
    assert np.array_equal(again[2].result(TIMEOUT), embedding(2))
    assert np.array_equal(again[3].result(TIMEOUT), embedding(3))
    assert worker._thread.is_alive()
    assert errors == [failure]


def test_progress_reports_encoded_and_still_queued(model, make_worker):
    source = make_source()
    reports = []
    reached = {3: threading.Event(), 4: threading.Event()}

    def on_progress(encoded, queued):
        reports.append((encoded, queued))
        if encoded in reached:
            reached[encoded].set()

    worker = make_worker(on_progress=on_progress)
    results(worker.request(source, [0, 1, 2]))
    assert reached[3].wait(TIMEOUT)
    assert reports == [(1, 2), (2, 1), (3, 0)]
    results(worker.request(source, [3]))
    assert reached[4].wait(TIMEOUT)
    assert reports == [(1, 2), (2, 1), (3, 0), (4, 0)]


class ProgressLog:
    """An ``on_progress`` callback that records its reports and signals when the queue is empty."""

    def __init__(self):
        self.reports = []
        self.drained = threading.Event()

    def __call__(self, encoded, queued):
        self.reports.append((encoded, queued))
        if queued == 0:
            self.drained.set()


def test_progress_counts_slices_not_batches(model, make_worker):
    source = make_source()
    log = ProgressLog()
    worker = make_worker(batch_size=3, on_progress=log)
    results(worker.request(source, range(7)))
    assert log.drained.wait(TIMEOUT)
    assert log.reports == [(3, 4), (6, 1), (7, 0)]


def test_failed_slices_are_not_counted_as_encoded(model, make_worker):
    source = make_source()
    log = ProgressLog()
    model.fail = {1}
    worker = make_worker(on_progress=log)
    futures = worker.request(source, range(3))
    assert futures[1].exception(TIMEOUT) is not None
    results({i: futures[i] for i in (0, 2)})
    assert log.drained.wait(TIMEOUT)
    assert log.reports == [(1, 2), (2, 0)]


def test_an_encoder_returning_too_few_embeddings_fails_the_batch_instead_of_hanging(model, make_worker):
    source = make_source()
    original = model.encode
    model.encode = lambda batch: original(batch)[:1]
    worker = make_worker(batch_size=2)
    futures = worker.request(source, [0, 1])
    for future in futures.values():
        assert "returned 1 embeddings for 2 slices" in str(future.exception(TIMEOUT))


def test_warm_queues_only_the_slices_not_cached_and_hands_out_no_copy(model, cache, make_worker, monkeypatch):
    source = make_source()
    cache.put(source.key(5, model.cache_id), embedding(55))
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    copies = []
    real_get = cache.get
    monkeypatch.setattr(cache, "get", lambda key: copies.append(key) or real_get(key))
    assert worker.warm(source, [4, 5, 6], priority=1) is None
    assert copies == []  # a scroll step asks for the slices around the view: the cached one is not copied
    assert worker.queued == 2
    model.release()
    deadline = time.monotonic() + TIMEOUT
    while worker.queued and time.monotonic() < deadline:
        time.sleep(0.01)
    assert model.order == [0, 4, 6]
    assert np.array_equal(real_get(source.key(6, model.cache_id)), embedding(6))


def test_warm_moves_a_queued_slice_up_as_request_does(model, make_worker):
    source = make_source()
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    later = worker.request(source, [1, 2], priority=5)
    worker.warm(source, [2], priority=0)
    worker.warm(source, [1], priority=9)  # less urgent: stays where it is
    model.release()
    results(later)
    assert model.order == [0, 2, 1]


# --- decoding is never behind the worker, and closing ----------------------------------------------------

def test_a_cached_embedding_is_available_while_the_worker_is_busy(model, cache, make_worker):
    source = make_source()
    cached_key = source.key(5, model.cache_id)
    cache.put(cached_key, embedding(55))
    worker = make_worker()
    start_blocked(worker, model, source, 0)
    worker.request(source, [1, 2, 3])

    got = {}

    def lookups():
        got["cache"] = cache.get(cached_key)
        got["future"] = worker.request(source, [5])[5]

    reader = threading.Thread(target=lookups, daemon=True)
    reader.start()
    reader.join(TIMEOUT)
    assert not reader.is_alive(), "a cached lookup waited for the busy encoder"
    assert not model.gate.is_set()  # the encoder really was still busy
    assert np.array_equal(got["cache"], embedding(55))
    assert got["future"].done() and np.array_equal(got["future"].result(0), embedding(55))
    model.release()


def test_close_stops_the_thread_and_refuses_new_requests(model, make_worker):
    source = make_source()
    worker = make_worker()
    assert np.array_equal(worker.request(source, [1])[1].result(TIMEOUT), embedding(1))
    worker.close()
    assert not worker._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        worker.request(source, [2])
    assert model.calls == [[1]]


def test_close_cancels_the_queue_and_lets_the_running_batch_finish(model, make_worker):
    source = make_source()
    worker = make_worker()
    running = start_blocked(worker, model, source, 0)
    queued = worker.request(source, [1, 2])
    closer = threading.Thread(target=worker.close, daemon=True)
    closer.start()
    deadline = time.monotonic() + TIMEOUT
    while not all(future.cancelled() for future in queued.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(future.cancelled() for future in queued.values())
    assert closer.is_alive()  # close waits for the running batch
    model.release()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert not worker._thread.is_alive()
    assert np.array_equal(running.result(0), embedding(0))
    assert model.calls == [[0]]


def test_close_without_waiting_returns_while_the_batch_runs_and_the_thread_ends_after_it(model, make_worker):
    source = make_source()
    worker = make_worker()
    running = start_blocked(worker, model, source, 0)
    queued = worker.request(source, [1, 2])
    worker.close(wait=False)  # as a GUI closes a session: the encode in progress is not waited for
    assert worker._thread.is_alive() and not running.done()
    assert all(future.cancelled() for future in queued.values())
    with pytest.raises(RuntimeError, match="closed"):
        worker.warm(source, [3])
    model.release()
    worker._thread.join(TIMEOUT)
    assert not worker._thread.is_alive()
    assert np.array_equal(running.result(0), embedding(0)) and model.calls == [[0]]


def test_the_worker_is_a_context_manager(model):
    source = make_source()
    with EmbeddingWorker(model, EmbeddingCache()) as worker:
        value = worker.request(source, [4])[4].result(TIMEOUT)
    assert np.array_equal(value, embedding(4))
    assert not worker._thread.is_alive()


@pytest.mark.slow
def test_python_exits_cleanly_while_a_worker_closed_without_waiting_is_still_encoding(export_cache):
    """A GUI closes workers without waiting; if the application then exits during their last encode, the native
    runtime's threads must not be torn down mid-call (that aborts the process: 'terminate called ...')."""
    import subprocess
    import sys

    code = """if True:
        import numpy as np
        from MedSAMSlicerLib.models.model_registry import load_model
        from MedSAMSlicerLib.volume.embedding_cache import EmbeddingCache, image_identity
        from MedSAMSlicerLib.volume.embedding_worker import EmbeddingWorker
        from MedSAMSlicerLib.volume.slice_source import SliceSource
        volume = np.random.default_rng(0).integers(0, 255, (6, 200, 200)).astype(np.uint8)
        worker = EmbeddingWorker(load_model("lite-medsam", device="cpu"), EmbeddingCache())
        futures = worker.request(SliceSource(volume, 2, image_identity(volume), "p"), range(6))
        futures[0].result()  # the worker goes on with slice 1 at once
        worker.close(wait=False)
        print("closed while encoding:", not futures[1].done(), flush=True)
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "closed while encoding: True" in result.stdout
