"""Persistent record of what the sandbox stamped, so a repeated CFDI gets 307 even after a restart."""

import sqlite3
import threading


class StampStore:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS stamps (hash TEXT PRIMARY KEY, custom_id TEXT, uuid TEXT, fecha TEXT, cfdi TEXT)")
        self._db.execute("CREATE INDEX IF NOT EXISTS stamps_custom ON stamps(custom_id)")
        self._lock = threading.Lock()

    def find(self, *, digest: str | None = None, custom_id: str | None = None) -> dict[str, str] | None:
        with self._lock:
            if digest:
                row = self._db.execute("SELECT uuid, fecha, cfdi FROM stamps WHERE hash = ?", (digest,)).fetchone()
            else:
                row = self._db.execute("SELECT uuid, fecha, cfdi FROM stamps WHERE custom_id = ?", (custom_id,)).fetchone()
        return None if row is None else {"uuid": row[0], "fechaTimbrado": row[1], "cfdi": row[2]}

    def add(self, digest: str, custom_id: str | None, uuid: str, fecha: str, cfdi: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO stamps VALUES (?, ?, ?, ?, ?)", (digest, custom_id, uuid, fecha, cfdi))

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM stamps").fetchone()[0]
