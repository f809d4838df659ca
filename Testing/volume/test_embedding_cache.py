"""The embedding cache keeps what it is given under a byte budget, evicts least-recently-used first,
survives restarts through its directory, and never returns an embedding for another image or setting.

An embedding is ``(256, 64, 64)``: 4 MiB as float32, 2 MiB as float16.
"""

import threading
from pathlib import Path

import numpy as np
import pytest

from MedSAMSlicerLib.volume import embedding_cache
from MedSAMSlicerLib.volume.embedding_cache import EMBEDDING_SHAPE, EmbeddingCache, EmbeddingKey, image_identity

FP32_BYTES = 256 * 64 * 64 * 4
FP16_BYTES = FP32_BYTES // 2


def key(index: int = 0, image_id: str = "image-a", axis: int = 2, preprocessing: str = "ct:40:400",
        model: str = "lite-medsam@79d8c9dca6db4d69") -> EmbeddingKey:
    return EmbeddingKey(image_id, axis, index, preprocessing, model)


def filled(value: float) -> np.ndarray:
    return np.full(EMBEDDING_SHAPE, float(value), dtype=np.float32)


def random_embedding(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(EMBEDDING_SHAPE) * 37.0).astype(np.float32)


def held(cache: EmbeddingCache, indices) -> set:
    """Which of ``key(i)`` a memory-only cache holds (a miss has no side effect on a memory-only cache)."""
    return {i for i in indices if cache.get(key(i)) is not None}


# --- sizes and the byte budget -------------------------------------------------------------------

def test_an_fp32_embedding_takes_4_mib_and_an_fp16_one_2_mib():
    fp32, fp16 = EmbeddingCache(), EmbeddingCache(fp16=True)
    assert fp32.nbytes == 0 and len(fp32) == 0
    fp32.put(key(0), filled(1))
    fp16.put(key(0), filled(1))
    assert fp32.nbytes == FP32_BYTES == 4 * 1024 * 1024
    assert fp16.nbytes == FP16_BYTES == 2 * 1024 * 1024
    fp32.put(key(1), filled(2))
    assert fp32.nbytes == 2 * FP32_BYTES and len(fp32) == 2


def test_fp16_storage_fits_twice_as_many_embeddings_in_the_same_budget():
    budget = 3 * FP32_BYTES
    fp32, fp16 = EmbeddingCache(max_bytes=budget), EmbeddingCache(max_bytes=budget, fp16=True)
    for index in range(10):
        fp32.put(key(index), filled(index))
        fp16.put(key(index), filled(index))
    assert len(fp32) == 3 and fp32.nbytes == 3 * FP32_BYTES
    assert len(fp16) == 6 and fp16.nbytes == 6 * FP16_BYTES
    # the most recent ones are kept
    assert held(fp32, range(10)) == {7, 8, 9}
    assert held(fp16, range(10)) == {4, 5, 6, 7, 8, 9}


def test_least_recently_used_is_evicted_first_and_get_refreshes_recency():
    cache = EmbeddingCache(max_bytes=3 * FP32_BYTES)
    for index in range(3):
        cache.put(key(index), filled(index))
    cache.put(key(3), filled(3))  # evicts 0, the oldest
    assert cache.get(key(0)) is None
    assert len(cache) == 3

    # touching 1 makes 2 the least recently used
    assert np.array_equal(cache.get(key(1)), filled(1))
    cache.put(key(4), filled(4))
    assert cache.get(key(2)) is None
    for index in (1, 3, 4):
        assert np.array_equal(cache.get(key(index)), filled(index))
    assert cache.nbytes == 3 * FP32_BYTES

    # the order is now 1, 3, 4 (gets above refreshed them in that order): next out is 1, then 3
    cache.put(key(5), filled(5))
    assert held(cache, [1]) == set()
    cache.put(key(6), filled(6))
    assert cache.get(key(3)) is None
    assert held(cache, [4, 5, 6]) == {4, 5, 6}


def test_budget_that_is_not_a_multiple_of_the_entry_size_is_never_exceeded():
    cache = EmbeddingCache(max_bytes=2 * FP32_BYTES + FP32_BYTES // 2)
    for index in range(5):
        cache.put(key(index), filled(index))
        assert cache.nbytes <= cache.max_bytes
    assert len(cache) == 2 and cache.nbytes == 2 * FP32_BYTES
    assert held(cache, range(5)) == {3, 4}


def test_putting_an_existing_key_replaces_it_without_counting_it_twice():
    cache = EmbeddingCache(max_bytes=2 * FP32_BYTES)
    cache.put(key(0), filled(1))
    cache.put(key(1), filled(2))
    cache.put(key(0), filled(3))  # replaces, must not evict key(1)
    assert len(cache) == 2 and cache.nbytes == 2 * FP32_BYTES
    assert np.array_equal(cache.get(key(0)), filled(3))
    assert np.array_equal(cache.get(key(1)), filled(2))


def test_an_embedding_larger_than_the_budget_is_not_kept_in_memory():
    cache = EmbeddingCache(max_bytes=FP32_BYTES - 1)
    cache.put(key(0), filled(1))
    assert len(cache) == 0 and cache.nbytes == 0
    assert cache.get(key(0)) is None

    fits_fp16 = EmbeddingCache(max_bytes=FP32_BYTES - 1, fp16=True)
    fits_fp16.put(key(0), filled(1))
    assert len(fits_fp16) == 1 and fits_fp16.nbytes == FP16_BYTES


def test_an_embedding_too_large_for_memory_still_goes_to_disk(tmp_path):
    cache = EmbeddingCache(max_bytes=1024, directory=tmp_path)
    cache.put(key(0), filled(5))
    assert cache.nbytes == 0 and len(cache) == 0
    assert np.array_equal(cache.get(key(0)), filled(5))  # read back from the file
    assert cache.nbytes == 0 and len(cache) == 0  # and still not held in memory


def test_clear_forgets_memory_only():
    cache = EmbeddingCache()
    cache.put(key(0), filled(1))
    cache.clear()
    assert cache.nbytes == 0 and len(cache) == 0 and cache.get(key(0)) is None


# --- values ----------------------------------------------------------------------------------------

def test_fp32_storage_returns_the_exact_values():
    original = random_embedding(1)
    cache = EmbeddingCache()
    cache.put(key(0), original.copy())
    got = cache.get(key(0))
    assert got.dtype == np.float32 and tuple(got.shape) == EMBEDDING_SHAPE
    assert np.array_equal(got, original)


def test_fp16_storage_returns_float32_equal_to_the_fp16_rounded_originals():
    original = random_embedding(2)
    cache = EmbeddingCache(fp16=True)
    cache.put(key(0), original.copy())
    got = cache.get(key(0))
    assert got.dtype == np.float32 and tuple(got.shape) == EMBEDDING_SHAPE
    assert np.array_equal(got, original.astype(np.float16).astype(np.float32))
    assert not np.array_equal(got, original)  # the rounding really happened
    assert np.allclose(got, original, rtol=1e-3, atol=1e-4)


def test_put_accepts_other_dtypes_and_stores_the_cache_dtype():
    original = random_embedding(3).astype(np.float64)
    cache = EmbeddingCache()
    cache.put(key(0), original)
    assert np.array_equal(cache.get(key(0)), original.astype(np.float32))
    assert cache.nbytes == FP32_BYTES


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_the_cache_holds_its_own_copy_of_the_values(fp16):
    """Changing the caller's tensor after put, or the returned tensor after get, must not change the cache."""
    original = random_embedding(4)
    expected = original.astype(np.float16).astype(np.float32) if fp16 else original.copy()
    cache = EmbeddingCache(fp16=fp16)
    given = original.copy()
    cache.put(key(0), given)
    given[...] = 0
    got = cache.get(key(0))
    assert np.array_equal(got, expected), "changing the tensor given to put() changed the cached embedding"
    got[...] = -1.0
    assert np.array_equal(cache.get(key(0)), expected), (
        "changing the tensor get() returned changed the cached embedding")


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_an_embedding_taken_from_a_batch_does_not_keep_the_whole_batch_in_memory(fp16):
    """``nbytes`` must be what the cache really holds: a view into an encoder's (B, 256, 64, 64) output
    must not pin the other B - 1 embeddings' memory."""
    batch = np.random.default_rng(8).standard_normal((8,) + EMBEDDING_SHAPE).astype(np.float32)
    cache = EmbeddingCache(fp16=fp16)
    cache.put(key(0), batch[3])
    got = cache.get(key(0))
    assert np.array_equal(got, batch[3].astype(np.float16).astype(np.float32) if fp16 else batch[3])
    per_entry = FP16_BYTES if fp16 else FP32_BYTES
    assert cache.nbytes == per_entry
    held = cache._entries[key(0)]
    stored_bytes = (held if held.base is None else held.base).nbytes  # what the held array keeps alive
    assert stored_bytes == per_entry, f"the cache counts {per_entry} bytes but keeps {stored_bytes} alive"


@pytest.mark.parametrize("shape", [(256, 64, 63), (1, 256, 64, 64), (64, 64, 256), (256, 64 * 64)])
def test_put_with_a_wrong_shape_raises_value_error_and_stores_nothing(shape, tmp_path):
    cache = EmbeddingCache(directory=tmp_path)
    with pytest.raises(ValueError, match=r"shape"):
        cache.put(key(0), np.zeros(shape, dtype=np.float32))
    assert len(cache) == 0 and cache.nbytes == 0
    assert list(tmp_path.iterdir()) == []
    assert cache.get(key(0)) is None


# --- keys and image identity ------------------------------------------------------------------------

def test_image_identity_depends_on_every_voxel_the_shape_and_the_dtype():
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (6, 20, 30), dtype=np.uint8)
    assert image_identity(volume) == image_identity(volume.copy())

    changed = volume.copy()
    changed[5, 19, 29] ^= 1  # one voxel, the very last one
    assert image_identity(changed) != image_identity(volume)
    changed = volume.copy()
    changed[0, 0, 0] ^= 1
    assert image_identity(changed) != image_identity(volume)

    assert image_identity(volume.reshape(6, 30, 20)) != image_identity(volume)  # same bytes, other shape
    assert image_identity(volume.view(np.int8)) != image_identity(volume)  # same bytes, other dtype
    # a non-contiguous view is the same image as its contiguous copy
    assert image_identity(volume[:, ::2]) == image_identity(np.ascontiguousarray(volume[:, ::2]))


def test_a_different_image_misses_in_memory_and_on_disk(tmp_path):
    volume = np.zeros((4, 8, 8), dtype=np.uint8)
    other = volume.copy()
    other[2, 3, 4] = 1
    cache = EmbeddingCache(directory=tmp_path)
    cache.put(key(2, image_id=image_identity(volume)), filled(7))
    assert np.array_equal(cache.get(key(2, image_id=image_identity(volume))), filled(7))
    assert cache.get(key(2, image_id=image_identity(other))) is None
    restarted = EmbeddingCache(directory=tmp_path)
    assert restarted.get(key(2, image_id=image_identity(other))) is None
    assert np.array_equal(restarted.get(key(2, image_id=image_identity(volume))), filled(7))


@pytest.mark.parametrize("change", [
    {"axis": 1}, {"index": 4}, {"preprocessing": "ct:50:350"}, {"model": "medsam-vit-b@0123456789abcdef"},
    {"image_id": "image-b"},
], ids=["axis", "index", "preprocessing", "model", "image"])
def test_any_other_key_field_is_a_miss_in_memory_and_on_disk(change, tmp_path):
    stored = key(3)
    fields = dict(image_id=stored.image_id, axis=stored.axis, index=stored.index,
                  preprocessing=stored.preprocessing, model=stored.model)
    fields.update(change)
    other = EmbeddingKey(**fields)
    assert other != stored and other.file_name != stored.file_name
    cache = EmbeddingCache(directory=tmp_path)
    cache.put(stored, filled(3))
    assert cache.get(other) is None
    assert EmbeddingCache(directory=tmp_path).get(other) is None
    assert np.array_equal(EmbeddingCache(directory=tmp_path).get(stored), filled(3))


# --- disk tier ----------------------------------------------------------------------------------------

def test_a_new_cache_on_the_same_directory_returns_the_embedding(tmp_path):
    originals = {index: random_embedding(10 + index) for index in range(3)}
    first = EmbeddingCache(directory=tmp_path)
    for index, embedding in originals.items():
        first.put(key(index), embedding)
    del first

    restarted = EmbeddingCache(directory=tmp_path)
    assert len(restarted) == 0
    assert key(1) in restarted
    for index, embedding in originals.items():
        got = restarted.get(key(index))
        assert got.dtype == np.float32 and np.array_equal(got, embedding)
    assert len(restarted) == 3 and restarted.nbytes == 3 * FP32_BYTES  # disk hits are promoted to memory


def test_disk_files_of_an_fp32_cache_read_by_an_fp16_cache_are_rounded(tmp_path):
    original = random_embedding(20)
    EmbeddingCache(directory=tmp_path).put(key(0), original)
    fp16 = EmbeddingCache(directory=tmp_path, fp16=True)
    assert np.array_equal(fp16.get(key(0)), original.astype(np.float16).astype(np.float32))
    assert fp16.nbytes == FP16_BYTES


def test_files_are_written_atomically_and_no_temporary_file_is_left(tmp_path):
    cache = EmbeddingCache(directory=tmp_path)
    for index in range(4):
        cache.put(key(index), filled(index))
    cache.put(key(0), filled(10))  # overwrite
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == sorted(key(index).file_name for index in range(4))
    assert not list(tmp_path.glob("*.tmp"))
    assert np.array_equal(EmbeddingCache(directory=tmp_path).get(key(0)), filled(10))


def test_a_failed_write_warns_once_keeps_the_embedding_in_memory_and_leaves_no_file(tmp_path, monkeypatch):
    cache = EmbeddingCache(directory=tmp_path)
    attempts = []

    def failing_savez(stream, **arrays):
        attempts.append(1)
        stream.write(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(embedding_cache.np, "savez", failing_savez)
    with pytest.warns(RuntimeWarning,
                      match="cannot be written \\(disk full\\); embeddings are kept in memory only") as caught:
        cache.put(key(0), filled(1))
        cache.put(key(1), filled(2))
    assert len(caught) == 1 and len(attempts) == 1  # the folder is not tried again for every slice
    assert list(tmp_path.iterdir()) == []
    assert np.array_equal(cache.get(key(1)), filled(2))
    monkeypatch.undo()
    assert EmbeddingCache(directory=tmp_path).get(key(0)) is None


def _valid_file_bytes(tmp_path: Path, k: EmbeddingKey, value: float) -> bytes:
    source = tmp_path / "source"
    EmbeddingCache(directory=source).put(k, filled(value))
    return (source / k.file_name).read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other-key", "wrong-shape", "pickle"])
def test_a_damaged_or_foreign_file_at_the_keys_path_is_ignored(damage, tmp_path):
    directory = tmp_path / "cache"
    directory.mkdir()
    target = directory / key(0).file_name
    if damage == "truncated":
        data = _valid_file_bytes(tmp_path, key(0), 1.0)
        target.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        target.write_bytes(np.random.default_rng(5).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "other-key":  # a complete file, but written for another key
        target.write_bytes(_valid_file_bytes(tmp_path, key(1), 1.0))
    elif damage == "wrong-shape":
        with open(target, "wb") as stream:
            np.savez(stream, embedding=np.ones((256, 64, 32), np.float32), key=np.array(str(key(0))))
    elif damage == "pickle":
        with open(target, "wb") as stream:
            np.savez(stream, embedding=np.array([{"a": 1}], dtype=object), key=np.array(str(key(0))))

    cache = EmbeddingCache(directory=directory)
    assert key(0) not in cache  # membership agrees with get()
    assert cache.get(key(0)) is None
    assert len(cache) == 0 and cache.nbytes == 0
    # a new put rewrites the file, and it is valid afterwards
    cache.put(key(0), filled(2))
    assert np.array_equal(EmbeddingCache(directory=directory).get(key(0)), filled(2))
    assert not list(directory.glob("*.tmp"))


# --- threads ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_concurrent_puts_and_gets_keep_the_budget_and_the_values(tmp_path):
    max_entries = 5
    cache = EmbeddingCache(max_bytes=max_entries * FP16_BYTES, fp16=True, directory=tmp_path)
    keys = 12
    values = {index: filled(index) for index in range(keys)}
    errors = []
    over_budget = []
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            if cache.nbytes > cache.max_bytes:
                over_budget.append(cache.nbytes)

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(40):
                index = int(rng.integers(keys))
                if rng.random() < 0.5:
                    cache.put(key(index), values[index])
                else:
                    got = cache.get(key(index))
                    if got is not None and not np.array_equal(got, values[index]):
                        errors.append((index, float(got.flatten()[0])))
                if cache.nbytes > cache.max_bytes:
                    over_budget.append(cache.nbytes)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    workers = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    stop.set()
    watcher.join(timeout=10)

    assert not any(thread.is_alive() for thread in workers)
    assert errors == []
    assert over_budget == []
    held_entries = list(cache._entries.values())
    assert cache.nbytes == sum(entry.nbytes for entry in held_entries)
    assert cache.nbytes == len(cache) * FP16_BYTES
    assert len(cache) <= max_entries
    assert not list(tmp_path.glob("*.tmp"))
    restarted = EmbeddingCache(directory=tmp_path)
    for path in tmp_path.iterdir():
        index = next(i for i in range(keys) if key(i).file_name == path.name)
        assert np.array_equal(restarted.get(key(index)), values[index])


def test_capacity_is_the_number_of_embeddings_that_fit():
    one = int(np.prod(EMBEDDING_SHAPE)) * 4
    cache = EmbeddingCache(max_bytes=3 * one + 5)
    assert cache.capacity == 3 and EmbeddingCache(max_bytes=3 * one, fp16=True).capacity == 6
    keys = [EmbeddingKey("image", 2, index, "soft", "model") for index in range(4)]
    for index, key in enumerate(keys):
        cache.put(key, np.full(EMBEDDING_SHAPE, index, dtype=np.float32))
    assert len(cache) == 3 and keys[0] not in cache  # one more than the capacity evicts the oldest
