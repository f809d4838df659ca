"""A background thread that owns the image encoder and fills the embedding cache, most urgent slice first.

Callers ask for slices with a priority (lower is sooner: the slice in view, then the annotated
range, then outward) and get a ``concurrent.futures.Future`` per slice that resolves to the
embedding or carries the encoder's exception. Requests can be re-prioritised or cancelled;
cancellation takes effect before the next batch. Decoding never goes through this worker, so a
prompt on a cached slice never waits behind queued encodes.
"""

import atexit
import heapq
import itertools
import threading
from concurrent.futures import Future
from typing import Callable, Dict, Iterable, List, Optional, Set

import numpy as np

from ..models.slice_model import SliceModel
from .embedding_cache import EmbeddingCache, EmbeddingKey
from .slice_source import SliceSource

ProgressCallback = Callable[[int, int], None]  # (slices encoded, slices still queued)

_closing: Set[threading.Thread] = set()  # threads of workers closed without waiting, until they end


@atexit.register
def _finish_closing_workers() -> None:
    """Python exits only after the last batch of each worker closed without waiting: a native encoder (OpenVINO)
    whose thread is torn down in the middle of a call aborts the whole process."""
    for thread in list(_closing):
        thread.join()


class _Job:
    __slots__ = ("key", "source", "index", "future", "entry")

    def __init__(self, key: EmbeddingKey, source: SliceSource, index: int):
        self.key, self.source, self.index = key, source, index
        self.future: Future = Future()
        self.entry: Optional[list] = None  # the live heap entry [priority, sequence, job]


class EmbeddingWorker:
    """One persistent thread encoding queued slices in priority order, in batches of ``batch_size``."""

    def __init__(self, model: SliceModel, cache: EmbeddingCache, batch_size: Optional[int] = None,
                 on_progress: Optional[ProgressCallback] = None,
                 on_error: Optional[Callable[[BaseException], None]] = None):
        self.model = model
        self.cache = cache
        # Batching does not speed up CPU encoding (measured), but fills a GPU.
        self.batch_size = batch_size or (1 if model.device.type == "cpu" else 8)
        self.on_progress = on_progress
        self.on_error = on_error
        self._heap: List[list] = []
        self._jobs: Dict[EmbeddingKey, _Job] = {}
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._closed = False
        self._encoded = 0
        self._thread = threading.Thread(target=self._run, name="MedSAM embedding worker", daemon=True)
        self._thread.start()

    def request(self, source: SliceSource, indices: Iterable[int], priority: float = 0) -> Dict[int, Future]:
        """Futures for the embeddings of ``indices``; cached ones are already done, queued ones move up if more
        urgent."""
        futures: Dict[int, Future] = {}
        with self._condition:
            for index, key, job in self._lookups(source, indices):
                if job is None:
                    cached = self.cache.get(key)
                    if cached is not None:
                        futures[index] = _done(cached)
                        continue
                futures[index] = self._queue(job, key, source, index, priority).future
            self._condition.notify()
        return futures

    def warm(self, source: SliceSource, indices: Iterable[int], priority: float = 0) -> None:
        """Queue the slices of ``indices`` that are not cached, handing nothing back. For callers that only prepare
        (the slices around the one in view, asked for at each scroll step): a cached slice costs a lookup here, not
        the copy of its embedding that ``request`` hands out."""
        with self._condition:
            for index, key, job in self._lookups(source, indices):
                if job is not None or key not in self.cache:
                    self._queue(job, key, source, index, priority)
            self._condition.notify()

    def _lookups(self, source: SliceSource, indices: Iterable[int]):
        """``(index, key, live job or None)`` per slice asked for. Call with the lock held."""
        if self._closed:
            raise RuntimeError("the embedding worker is closed")
        for index in indices:
            index = int(index)
            key = source.key(index, self.model.cache_id)
            job = self._jobs.get(key)
            if job is not None and job.future.cancelled():  # its caller gave up on it: start afresh
                self._drop(job)
                job = None
            yield index, key, job

    def _queue(self, job: Optional[_Job], key: EmbeddingKey, source: SliceSource, index: int,
               priority: float) -> _Job:
        """The slice's job, made and queued if there is none, moved up if ``priority`` is more urgent. Call with the
        lock held."""
        if job is None:
            job = self._jobs[key] = _Job(key, source, index)
            self._push(job, priority)
        elif job.entry is not None and priority < job.entry[0]:
            self._push(job, priority)
        return job

    def prioritise(self, source: SliceSource, priorities: Dict[int, float]) -> None:
        """Give queued slices of ``source`` new priorities (slices not queued are ignored)."""
        with self._condition:
            for index, priority in priorities.items():
                job = self._jobs.get(source.key(index, self.model.cache_id))
                if job is not None and job.entry is not None:
                    self._push(job, priority)

    def cancel(self, source: Optional[SliceSource] = None) -> int:
        """Drop the queued slices (of ``source``, or all); returns how many. A batch already encoding completes."""
        with self._condition:
            dropped = [job for job in self._jobs.values()
                       if job.entry is not None and (source is None or job.source is source)]
            for job in dropped:
                self._drop(job)
                job.future.cancel()
            return len(dropped)

    @property
    def queued(self) -> int:
        with self._condition:
            return sum(1 for job in self._jobs.values() if job.entry is not None)

    def close(self, wait: bool = True) -> None:
        """Cancel what is queued and stop the thread once the running batch is done; with ``wait``, return only then.
        A GUI closes without waiting: a batch of ViT-B encodes takes seconds on a CPU, and nothing needs its end."""
        self.cancel()
        if not wait:
            _closing.add(self._thread)
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if wait:
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _tombstone(job: _Job) -> None:
        """Unlink a job from its heap entry, which stays in the heap as a tombstone."""
        if job.entry is not None:
            job.entry[2] = None
            job.entry = None

    def _drop(self, job: _Job) -> None:
        """Forget a queued job. Call with the lock held."""
        self._tombstone(job)
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]

    def _push(self, job: _Job, priority: float) -> None:
        self._tombstone(job)
        job.entry = [priority, next(self._sequence), job]
        heapq.heappush(self._heap, job.entry)

    def _next_batch(self) -> List[_Job]:
        with self._condition:
            while not self._closed and not any(entry[2] is not None for entry in self._heap):
                self._heap.clear()
                self._condition.wait()
            batch: List[_Job] = []
            while self._heap and len(batch) < self.batch_size:
                job = heapq.heappop(self._heap)[2]
                if job is None:
                    continue
                job.entry = None
                if job.future.set_running_or_notify_cancel():
                    batch.append(job)
                else:  # cancelled by its caller while queued
                    self._drop(job)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                if self._closed:
                    _closing.discard(self._thread)
                    return
                continue
            try:
                embeddings = self.model.encode(np.stack([self.model.prepare(job.source.slice(job.index))
                                                         for job in batch]))
                if len(embeddings) != len(batch):
                    raise RuntimeError(f"the encoder returned {len(embeddings)} embeddings for {len(batch)} slices")
                for job, embedding in zip(batch, embeddings):
                    self.cache.put(job.key, embedding)
            except BaseException as error:  # reported through every future of the batch, never swallowed
                self._finish(batch, encoded=False)
                for job in batch:
                    job.future.set_exception(error)
                if self.on_error is not None:
                    self.on_error(error)
                continue
            self._finish(batch)
            for job, embedding in zip(batch, embeddings):
                job.future.set_result(embedding.copy())
            if self.on_progress is not None:
                self.on_progress(self._encoded, self.queued)

    def _finish(self, batch: List[_Job], encoded: bool = True) -> None:
        with self._condition:
            for job in batch:
                self._jobs.pop(job.key, None)
            if encoded:
                self._encoded += len(batch)


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
