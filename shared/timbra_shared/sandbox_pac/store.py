"""Persistent record of what the sandbox stamped, so a repeated CFDI gets 307 even after a restart."""

import sqlite3
import threading

import orjson


class StampStore:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a process crash, one fsync per checkpoint
        self._db.execute("CREATE TABLE IF NOT EXISTS stamps_v4 (hash TEXT PRIMARY KEY, custom_id TEXT, uuid TEXT UNIQUE, data TEXT)")
        self._db.execute("CREATE INDEX IF NOT EXISTS stamps_v4_custom ON stamps_v4(custom_id)")
        self._lock = threading.Lock()

    def find(self, *, digest: str | None = None, custom_id: str | None = None) -> dict[str, str] | None:
        """The stamp's SW version-4 ``data`` (``uuid``, ``fechaTimbrado``, ``cfdi``…), by content hash or custom id."""
        with self._lock:
            if digest:
                row = self._db.execute("SELECT data FROM stamps_v4 WHERE hash = ?", (digest,)).fetchone()
            else:
                row = self._db.execute("SELECT data FROM stamps_v4 WHERE custom_id = ? LIMIT 1", (custom_id,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def add(self, digest: str, custom_id: str | None, data: dict[str, str]) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO stamps_v4 VALUES (?, ?, ?, ?)", (digest, custom_id, data["uuid"], orjson.dumps(data).decode()))

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM stamps_v4").fetchone()[0]
