"""The gateway's exchange log: one SQLite row per answered request, plus the developer's rating.

What is stored (the README repeats this): the request as the client sent it (messages or prompt and
suffix, sampling settings), the answer returned, every rejected attempt of a best-of-N request, the
checker's verdict and diagnostics, the model name, timings, and later the rating (up/down) and a
corrected answer. No client address, token or header is stored.

One connection guarded by a lock: the gateway writes a row per request, far below SQLite's rate,
and WAL mode lets `bbjtune data feedback` read the file while the gateway runs.

Below the stages: the gateway (serve/) writes the file and `bbjtune data feedback` (data/) reads
it, and neither stage imports the other.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bbjtune.errors import BbjtuneError

SCHEMA_VERSION = 1
MAX_CORRECTION_CHARS = 200_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    endpoint TEXT NOT NULL,          -- "chat" or "completion"
    model TEXT NOT NULL,
    request TEXT NOT NULL,           -- JSON: the client's request body
    answer TEXT NOT NULL,            -- the answer returned to the client
    verdict TEXT NOT NULL,           -- pass, fail, no-code
    compiler TEXT,
    diagnostics TEXT NOT NULL,       -- JSON list
    attempts INTEGER NOT NULL,       -- samples drawn (1 + retries)
    rejected TEXT NOT NULL,          -- JSON list of {answer, verdict, reason} of failed attempts
    latency_ms REAL NOT NULL,        -- whole request, as the client saw it
    upstream_ms REAL NOT NULL,       -- time spent waiting for the upstream model
    check_ms REAL NOT NULL,          -- time spent in the checker
    rating INTEGER,                  -- +1 up, -1 down, NULL unrated
    correction TEXT,
    rated REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

COLUMNS = (
    "id",
    "created",
    "endpoint",
    "model",
    "request",
    "answer",
    "verdict",
    "compiler",
    "diagnostics",
    "attempts",
    "rejected",
    "latency_ms",
    "upstream_ms",
    "check_ms",
    "rating",
    "correction",
    "rated",
)
_JSON_COLUMNS = ("request", "diagnostics", "rejected")


@dataclass
class Exchange:
    endpoint: str
    model: str
    request: dict[str, Any]
    answer: str
    verdict: str
    compiler: str | None
    diagnostics: list[dict[str, Any]]
    attempts: int
    rejected: list[dict[str, Any]]
    latency_ms: float
    upstream_ms: float
    check_ms: float


def new_id() -> str:
    return "ex-" + secrets.token_hex(8)


class ExchangeLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: no fsync per insert (measured: ~45 ms a request on a busy disk, more than everything
            # else the gateway does); WAL stays consistent, a power cut may lose the last few rows
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except sqlite3.DatabaseError as exc:
            raise BbjtuneError(
                f"{self.path} is not a usable exchange log ({exc})",
                "give a new file with --log, or the gateway's own log file",
            ) from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def add(self, ex: Exchange, exchange_id: str | None = None) -> str:
        exchange_id = exchange_id or new_id()
        row = (
            exchange_id,
            time.time(),
            ex.endpoint,
            ex.model,
            json.dumps(ex.request, ensure_ascii=False),
            ex.answer,
            ex.verdict,
            ex.compiler,
            json.dumps(ex.diagnostics, ensure_ascii=False),
            ex.attempts,
            json.dumps(ex.rejected, ensure_ascii=False),
            ex.latency_ms,
            ex.upstream_ms,
            ex.check_ms,
        )
        with self._lock:
            columns = COLUMNS[: len(row)]  # the rating columns stay empty until rated
            self._db.execute(
                f"INSERT INTO exchanges ({', '.join(columns)}) VALUES ({', '.join('?' * len(row))})", row
            )
        return exchange_id

    def rate(self, exchange_id: str, rating: int | None, correction: str | None) -> bool:
        """Set the rating (+1/-1, None keeps it) and/or the correction; False when the id is unknown."""
        if correction is not None and len(correction) > MAX_CORRECTION_CHARS:
            raise ValueError(f"the correction is longer than {MAX_CORRECTION_CHARS} characters")
        with self._lock:
            cur = self._db.execute(
                "UPDATE exchanges SET rating = COALESCE(?, rating), correction = COALESCE(?, correction), rated = ? "
                "WHERE id = ?",
                (rating, correction, time.time(), exchange_id),
            )
        return cur.rowcount == 1

    def get(self, exchange_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM exchanges WHERE id = ?", (exchange_id,)
            ).fetchone()
        return _row(row) if row else None

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM exchanges ORDER BY created DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_row(r) for r in rows]


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every exchange of a log file, oldest first (read-only; the gateway may be writing)."""
    path = Path(path)
    if not path.is_file():
        raise BbjtuneError(
            f"{path} does not exist", "give the file that `bbjtune serve gateway --log` writes"
        )
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM exchanges ORDER BY created, id").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise BbjtuneError(
            f"{path} is not a gateway exchange log ({exc})",
            "give the file that `bbjtune serve gateway --log` writes",
        ) from exc
    return [_row(r) for r in rows]


def _row(row: tuple) -> dict[str, Any]:
    out = dict(zip(COLUMNS, row))
    for key in _JSON_COLUMNS:
        out[key] = json.loads(out[key])
    return out
