"""Per-slice image embeddings, kept so that every later prompt on a slice costs only a decode.

Keys name everything an embedding depends on: the image's content, the slicing axis, the slice,
the intensity settings and the model weights. Memory is bounded by a byte budget with
least-recently-used eviction; embeddings may be stored as fp16 to halve it. An optional
directory keeps them across restarts: files are written atomically, carry their full key, and
a file whose key or shape does not match is ignored, so a changed image or setting never
returns a stale embedding. The directory is a convenience, never a reason to lose a run: if
writing to it fails (disk full, folder removed), one warning says so and the cache goes on in
memory only.
"""

import hashlib
import os
import tempfile
import threading
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

EMBEDDING_SHAPE = (256, 64, 64)


@dataclass(frozen=True)
class EmbeddingKey:
    image_id: str  # content hash of the source volume
    axis: int
    index: int
    preprocessing: str  # IntensitySettings.key
    model: str  # SliceModel.cache_id
    region: str = ""  # a crop of the slice (``CropWindow.key``), or "" for the whole slice

    def __str__(self) -> str:
        whole = f"{self.image_id}|{self.axis}|{self.index}|{self.preprocessing}|{self.model}"
        return f"{whole}|{self.region}" if self.region else whole

    @property
    def file_name(self) -> str:
        return hashlib.sha256(str(self).encode()).hexdigest()[:32] + ".npz"


def image_identity(volume: np.ndarray) -> str:
    """A content hash of a volume (shape, dtype and voxels), the cache's notion of 'the same image'."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{volume.shape}|{volume.dtype.str}".encode())
    digest.update(np.ascontiguousarray(volume).data)
    return digest.hexdigest()


class EmbeddingCache:
    """A thread-safe LRU cache of ``(256, 64, 64)`` embeddings with a byte budget and optional disk tier."""

    def __init__(self, max_bytes: int = 1 << 30, fp16: bool = False, directory: Optional[Union[str, Path]] = None):
        self.max_bytes = int(max_bytes)
        self.dtype = np.dtype(np.float16 if fp16 else np.float32)
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._entries: "OrderedDict[EmbeddingKey, np.ndarray]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._disk_failed = False

    @property
    def capacity(self) -> int:
        """How many embeddings fit in memory: asking for more evicts the least recently used."""
        return self.max_bytes // (int(np.prod(EMBEDDING_SHAPE)) * self.dtype.itemsize)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (never above ``max_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: EmbeddingKey) -> bool:
        """True when ``get`` would return an embedding (a damaged or foreign file on disk does not count)."""
        with self._lock:
            if key in self._entries:
                return True
        return self._read(key) is not None

    def get(self, key: EmbeddingKey) -> Optional[np.ndarray]:
        """The embedding as float32, or None; a disk hit is promoted to memory."""
        with self._lock:
            embedding = self._entries.get(key)
            if embedding is not None:
                self._entries.move_to_end(key)
                return embedding.astype(np.float32, copy=True)  # the caller's to change
        embedding = self._read(key)
        if embedding is not None:
            self._remember(key, embedding)
            return embedding.astype(np.float32, copy=True)
        return None

    def put(self, key: EmbeddingKey, embedding: np.ndarray) -> None:
        # always a copy: the caller may reuse its array, and a view would pin the encoder's whole batch
        embedding = np.array(embedding, dtype=self.dtype, copy=True, order="C")
        if tuple(embedding.shape) != EMBEDDING_SHAPE:
            raise ValueError(f"embedding for {key} has shape {tuple(embedding.shape)}, expected {EMBEDDING_SHAPE}")
        self._remember(key, embedding)
        if self.directory is not None and not self._disk_failed:
            try:
                self._write(key, embedding)
            except OSError as error:
                self._disk_failed = True
                warnings.warn(f"embedding cache folder {self.directory} cannot be written "
                              f"({error.strerror or error}); embeddings are kept in memory only", RuntimeWarning)

    def clear(self) -> None:
        """Forget everything in memory (files on disk stay valid and are reused)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _remember(self, key: EmbeddingKey, embedding: np.ndarray) -> None:
        size = embedding.nbytes
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if size > self.max_bytes:
                return
            while self._entries and self._bytes + size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
            self._entries[key] = embedding
            self._bytes += size

    def _write(self, key: EmbeddingKey, embedding: np.ndarray) -> None:
        target = self.directory / key.file_name
        handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, embedding=embedding, key=np.array(str(key)))
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _read(self, key: EmbeddingKey) -> Optional[np.ndarray]:
        if self.directory is None:
            return None
        path = self.directory / key.file_name
        try:
            with np.load(path, allow_pickle=False) as stored:
                if str(stored["key"]) != str(key) or stored["embedding"].shape != EMBEDDING_SHAPE:
                    return None
                return stored["embedding"].astype(self.dtype, copy=False)
        except FileNotFoundError:
            return None
        # a truncated or foreign file: ignore it, it will be rewritten
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
            return None
