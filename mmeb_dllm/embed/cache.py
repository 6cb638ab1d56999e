"""A content-addressed embedding cache shared by every task, run and process on one machine.

A vector is stored under two keys: the embedding space (:meth:`EmbeddingRecipe.key`: model, revision, resolved
snapshot, adapter and its hash, pooling, attention, instruction placement, image resolution, dtype, normalisation)
and the item's content (:func:`mmeb_dllm.embed.embedder.item_key`: its text and decoded pixels). So a candidate that
appears in several tasks is encoded once, a rerun reads everything back, and a killed run loses at most the batch
that was in flight.

Storage is one SQLite database in WAL mode (``<dir>/vectors.sqlite3``): readers never block, concurrent writers
(several ranks, several evaluations) queue on SQLite's lock, and every :meth:`EmbeddingCache.put` is one
transaction, so a ``kill -9`` leaves either the whole batch or none of it. SQLite's locking needs a local
filesystem; on a network filesystem give each machine its own cache (multi-process encoding gathers vectors over
``torch.distributed`` and does not need a shared cache).

Location: ``$MMEB_DLLM_EMBED_CACHE`` or ``<cache_dir()>/embeddings``; ``MMEB_DLLM_EMBED_CACHE=off`` disables it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from mmeb_dllm.errors import ConfigError
from mmeb_dllm.paths import cache_dir

logger = logging.getLogger(__name__)

ENV_VAR = "MMEB_DLLM_EMBED_CACHE"
DISABLED_VALUES = frozenset({"off", "0", "false", "no", "none", "disabled"})
DB_FILE = "vectors.sqlite3"
_LOOKUP_CHUNK = 500  # keys per SELECT (well under SQLite's bound-variable limit)
_BUSY_TIMEOUT_S = 600.0  # how long a write waits for other writers
_SETUP_TIMEOUT_S = 120.0
_PAGE_SIZE = 16384  # a 4096-d float32 vector is 16 KB: fewer overflow pages than the 4 KB default

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    space TEXT NOT NULL,
    item TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (space, item)
);
CREATE TABLE IF NOT EXISTS spaces (
    space TEXT PRIMARY KEY,
    recipe TEXT NOT NULL,
    created REAL NOT NULL
);
"""


class EmbeddingCache:
    """Float32 vectors keyed by ``(space, item)`` in a SQLite database, safe to share between threads and processes.

    ``space`` is an embedding-space key (``recipe.key()``), ``item`` a content key. Vectors come back bit-identical
    to what was stored. The connection is opened lazily per process, so a cache object survives ``fork`` (DataLoader
    workers) and pickling without sharing a connection.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        self.path = self.directory / DB_FILE
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"

    def __getstate__(self) -> dict[str, object]:
        return {"directory": self.directory}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["directory"])  # type: ignore[misc]

    # --- connection ---------------------------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._connection is None or self._pid != os.getpid():
            self._connection = self._open()
            self._pid = os.getpid()
        return self._connection

    def _open(self) -> sqlite3.Connection:
        """Connect, switch to WAL and create the tables; retried while another process holds the setup lock
        (SQLite answers "database is locked" at once, without waiting, to a second connection switching a new
        database to WAL)."""
        deadline = time.monotonic() + _SETUP_TIMEOUT_S
        while True:
            connection = None
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(
                    self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
                )
                connection.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # takes effect on a new file only
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash keeps every committed batch
                with _transaction(connection):
                    for statement in _statements():
                        connection.execute(statement)
                return connection
            except sqlite3.OperationalError as exc:
                if connection is not None:
                    connection.close()
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise _unusable(self.path, exc) from exc
                time.sleep(random.uniform(0.02, 0.2))
            except (OSError, sqlite3.Error) as exc:
                if connection is not None:
                    connection.close()
                raise _unusable(self.path, exc) from exc

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None
        self._pid = None

    # --- reads and writes ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db()

    def get(self, space: str, items: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those ``items`` that are present (``item -> (D,) float32``).

        A read that fails (damaged file, lock held past the timeout) counts as a miss, with a warning.
        """
        wanted = list(dict.fromkeys(items))
        found: dict[str, np.ndarray] = {}
        try:
            with self._using() as db:
                for start in range(0, len(wanted), _LOOKUP_CHUNK):
                    chunk = wanted[start : start + _LOOKUP_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = db.execute(
                        f"SELECT item, dim, vector FROM vectors WHERE space = ? AND item IN ({marks})",
                        [space, *chunk],
                    ).fetchall()
                    for item, dim, blob in rows:
                        vector = np.frombuffer(blob, dtype="<f4")
                        if vector.shape == (dim,):
                            found[item] = vector.astype(np.float32)  # a writable native-order copy
        except sqlite3.Error as exc:
            logger.warning("embedding cache %s unreadable (%s): encoding instead", self.path, exc)
        return found

    def put(self, space: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Store ``vectors`` (``item -> (D,)``) in one transaction; entries already present are kept.

        A write that fails (disk full, lock held past the timeout) is skipped with a warning: the run goes on, only
        a later run cannot reuse these vectors.
        """
        rows = []
        for item, vector in vectors.items():
            array = np.ascontiguousarray(vector, dtype="<f4")
            if array.ndim != 1:
                raise ValueError(f"embedding cache: vector of {item} has shape {array.shape}, expected (D,)")
            rows.append((space, item, int(array.shape[0]), array.tobytes()))
        if not rows:
            return
        try:
            with self._using() as db, _transaction(db):
                db.executemany("INSERT OR IGNORE INTO vectors (space, item, dim, vector) VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            logger.warning("embedding cache %s: could not store %d vectors (%s)", self.path, len(rows), exc)

    def describe_space(self, space: str, recipe: Mapping[str, object]) -> None:
        """Record the recipe behind ``space`` (for people inspecting the cache; lookups never read it)."""
        payload = json.dumps(dict(recipe), sort_keys=True, default=str)
        try:
            with self._using() as db, _transaction(db):
                db.execute("INSERT OR IGNORE INTO spaces (space, recipe, created) VALUES (?, ?, ?)",
                           (space, payload, time.time()))
        except sqlite3.Error as exc:
            logger.warning("embedding cache %s: could not record recipe %s (%s)", self.path, space, exc)

    def count(self, space: str | None = None) -> int:
        """Number of stored vectors (of one space, or all)."""
        with self._using() as db:
            if space is None:
                return int(db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
            return int(db.execute("SELECT COUNT(*) FROM vectors WHERE space = ?", (space,)).fetchone()[0])

    def items(self, space: str) -> set[str]:
        """Content keys stored in one space."""
        with self._using() as db:
            return {row[0] for row in db.execute("SELECT item FROM vectors WHERE space = ?", (space,))}

    def spaces(self) -> dict[str, dict[str, object]]:
        """Recorded embedding spaces and their recipes."""
        with self._using() as db:
            return {space: json.loads(recipe) for space, recipe in db.execute("SELECT space, recipe FROM spaces")}


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _unusable(path: Path, exc: Exception) -> ConfigError:
    return ConfigError(
        f"cannot open the embedding cache {path} ({exc}). Point ${ENV_VAR} at a writable folder on a local disk "
        f"or set {ENV_VAR}=off to run without it."
    )


def _statements() -> Sequence[str]:
    return [s.strip() for s in _SCHEMA.split(";") if s.strip()]


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error) on an autocommit connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.connection.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def cache_location() -> Path | None:
    """Where the shared cache lives, or ``None`` when ``$MMEB_DLLM_EMBED_CACHE`` disables it."""
    value = os.environ.get(ENV_VAR)
    if value is not None and value.strip().lower() in DISABLED_VALUES:
        return None
    if value and value.strip():
        return Path(value.strip()).expanduser()
    return cache_dir() / "embeddings"


def default_cache() -> EmbeddingCache | None:
    """The shared cache at :func:`cache_location`, or ``None`` when disabled."""
    location = cache_location()
    return None if location is None else EmbeddingCache(location)
